"""Fine-tuning strategies for timm classifiers: which parameters train, LoRA adapters through HF peft.

Strategies (config group ``finetune/``, node ``model.finetune``):

* ``full``: every parameter trains.
* ``linear_probe``: only the head trains; the whole backbone stays in eval mode (batch-norm statistics,
  dropout and drop-path frozen too), so its tensors stay bit-identical.
* ``partial``: the head and the last ``blocks`` blocks/stages train (timm's coarse ``group_matcher``
  groups, e.g. ViT blocks or ResNet stages; the final norm counts with the last block).
* ``lora``: low-rank adapters (rank, alpha, dropout) on the backbone's linear/conv layers through HF peft;
  the head trains in full. Target modules per backbone family (timm ViT ``qkv``/``proj``/``fc1``/``fc2``;
  ResNet ``layerN.M.convK``; other conv nets every non-grouped conv and linear outside stem and head),
  overridable with ``target_modules`` (a list of module-name suffixes, or one regex matched in full).
* ``bitfit``: only biases and the head train.

In every strategy but ``full``, batch-norm layers whose weight is frozen keep their running statistics
(they are held in eval mode during training), so that everything that does not train stays unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from experiment_utils.errors import UserError
from lightning_modules.backbones import head_module_name

log = logging.getLogger(__name__)

STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "linear_probe": {},
    "partial": {"blocks": 1},
    "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": None},
    "bitfit": {},
}
"""Each strategy with its options and their defaults."""

VIT_TARGETS = r"(.*\.)?blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
"""LoRA targets of timm ViTs (and other models with the same block layout)."""
RESNET_TARGETS = r"layer\d+\.\d+\.conv\d+"
"""LoRA targets of timm ResNets: the convs of every residual block (not the stem, not the downsample)."""
LORA_PREFIX = "base_model.model."


def check_finetune(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a ``model.finetune`` config and return it as a plain dict with every default filled in."""
    cfg = dict(cfg) if cfg else {"strategy": "full"}
    strategy = cfg.pop("strategy", "full")
    if strategy not in STRATEGY_OPTIONS:
        raise UserError(f"unknown finetune strategy {strategy!r}: use finetune={'|'.join(STRATEGY_OPTIONS)}")
    allowed = STRATEGY_OPTIONS[strategy]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise UserError(
            f"model.finetune.{unknown[0]} is not an option of finetune={strategy} (its options: {valid})"
        )
    out: dict[str, Any] = {"strategy": strategy, **allowed, **cfg}
    if strategy == "partial" and (
        not isinstance(out["blocks"], int) or isinstance(out["blocks"], bool) or out["blocks"] < 1
    ):
        raise UserError(f"model.finetune.blocks must be an integer >= 1, got {out['blocks']!r}")
    if strategy == "lora":
        rank = out["rank"]
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise UserError(f"model.finetune.rank (LoRA rank) must be an integer >= 1, got {rank!r}")
        out["alpha"] = float(out["alpha"])
        if out["alpha"] <= 0:
            raise UserError(f"model.finetune.alpha must be > 0, got {out['alpha']}")
        out["dropout"] = float(out["dropout"])
        if not 0.0 <= out["dropout"] < 1.0:
            raise UserError(f"model.finetune.dropout must be in [0, 1), got {out['dropout']}")
        targets = out["target_modules"]
        if targets is not None and not isinstance(targets, str):
            if (
                not isinstance(targets, list | tuple)
                or not targets
                or not all(isinstance(t, str) for t in targets)
            ):
                raise UserError(
                    "model.finetune.target_modules must be null, a regex string or a list of module names"
                )
            out["target_modules"] = list(targets)
    return out


def _in_module(name: str, module: str) -> bool:
    """True when the parameter/module ``name`` lies in the module ``module`` (or is it)."""
    return name == module or name.startswith(module + ".")


def strip_lora_name(name: str) -> str:
    """A parameter/module name of a peft-wrapped model as the plain timm model names it (roughly)."""
    name = name[len(LORA_PREFIX) :] if name.startswith(LORA_PREFIX) else name
    return (
        name.replace(".base_layer", "")
        .replace(".modules_to_save.default", "")
        .replace(".original_module", "")
    )


def partial_trainable_params(model: nn.Module, blocks: int, head: str) -> set[str]:
    """Names of the parameters that train with ``partial``: the head and the last ``blocks`` groups."""
    from timm.models import group_parameters

    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        raise UserError(
            f"finetune=partial needs a timm model with group_matcher(); {type(model).__name__} has none"
        )
    groups = group_parameters(model, matcher(coarse=True))
    body = [gid for gid in sorted(groups) if any(not _in_module(n, head) for n in groups[gid])]
    if blocks >= len(body):
        log.warning(
            "finetune=partial with blocks=%d >= %d groups: the whole network trains", blocks, len(body)
        )
    chosen = set(body[-blocks:])
    names = {n for gid in chosen for n in groups[gid]}
    return names | {n for n, _ in model.named_parameters() if _in_module(n, head)}


def lora_target_modules(model: nn.Module, targets: str | list[str] | None, head: str) -> list[str]:
    """Full names of the Linear/Conv2d modules that get LoRA adapters (see the module docstring)."""
    layers = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d) and n and not _in_module(n, head)
    }
    if targets is None:
        for pattern in (VIT_TARGETS, RESNET_TARGETS):
            names = [n for n in layers if re.fullmatch(pattern, n)]
            if names:
                return names
        stem: set[str] = set()
        matcher = getattr(model, "group_matcher", None)
        if callable(matcher):
            from timm.models import group_parameters

            groups = group_parameters(model, matcher(coarse=True))
            stem = {n.rsplit(".", 1)[0] for n in groups[min(groups)]} if groups else set()
        names = [
            n for n, m in layers.items() if n not in stem and not (isinstance(m, nn.Conv2d) and m.groups > 1)
        ]
    elif isinstance(targets, str):
        names = [n for n in layers if re.fullmatch(targets, n)]
    else:
        names = [n for n in layers if any(n == t or n.endswith("." + t) for t in targets)]
    if not names:
        examples = ", ".join(list(layers)[:4])
        raise UserError(
            f"model.finetune.target_modules={targets!r} matches no Linear/Conv2d layer of {type(model).__name__} "
            f"(its layers are named like {examples})"
        )
    return names


def apply_finetuning(model: nn.Module, cfg: Mapping[str, Any]) -> nn.Module:
    """Set which parameters of ``model`` (a timm model with its final head) train; return the network to train.

    That is ``model`` itself, or for ``lora`` a peft ``PeftModel`` around it. ``cfg`` comes from
    ``check_finetune``.
    """
    strategy = cfg["strategy"]
    head = head_module_name(model)
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        targets = lora_target_modules(model, cfg.get("target_modules"), head)
        lora_cfg = LoraConfig(
            r=int(cfg["rank"]),
            lora_alpha=float(cfg["alpha"]),
            lora_dropout=float(cfg["dropout"]),
            target_modules=targets,
            modules_to_save=[head],
            bias="none",
        )
        net = get_peft_model(model, lora_cfg)
        log.info(
            "LoRA rank %d on %d layers (%s, ...), head %s trains in full",
            cfg["rank"],
            len(targets),
            targets[0],
            head,
        )
        return net
    if strategy == "full":
        trainable = {n for n, _ in model.named_parameters()}
    elif strategy == "linear_probe":
        trainable = {n for n, _ in model.named_parameters() if _in_module(n, head)}
    elif strategy == "partial":
        trainable = partial_trainable_params(model, int(cfg["blocks"]), head)
    else:  # bitfit
        trainable = {n for n, _ in model.named_parameters() if n.endswith(".bias") or _in_module(n, head)}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return model


def modules_kept_in_eval(net: nn.Module, strategy: str) -> list[str]:
    """Names of the sub-modules of ``net`` that stay in eval mode while training with ``strategy``.

    ``full``: none. ``linear_probe``: the whole backbone (everything but the head and its ancestors). Other
    strategies: batch-norm layers whose weight is frozen (their running statistics must not change).
    """
    if strategy == "full":
        return []
    names = []
    if strategy == "linear_probe":
        head = head_module_name(net.get_base_model() if hasattr(net, "get_base_model") else net)
        ancestors = {head.rsplit(".", i)[0] for i in range(1, head.count(".") + 1)} | {""}
        return [n for n, _ in net.named_modules() if n not in ancestors and not _in_module(n, head)]
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            weight = getattr(module, "weight", None)
            if weight is None or not weight.requires_grad:
                names.append(name)
    return names


def save_lora_adapter(net: nn.Module, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the LoRA adapters and the trained head of a peft-wrapped ``net`` to ``folder`` (peft format).

    The folder (``adapter_model.safetensors`` + ``adapter_config.json``) is a few hundred kB to a few MB;
    ``peft.PeftModel.from_pretrained(timm_model, folder)`` puts it back on the same base weights. Written to
    a temporary folder first and renamed, so a failed save leaves nothing half-written.
    """
    if not hasattr(net, "save_pretrained") or not hasattr(net, "peft_config"):
        raise UserError("only models trained with finetune=lora have adapters to save")
    target = Path(folder).expanduser()
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists: choose another folder for the adapter")
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        net.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
