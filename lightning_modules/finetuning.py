"""Fine-tuning strategies for timm classifiers: which parameters train, LoRA adapters through HF peft.

A strategy is a small class behind one interface (``FinetuneStrategy``): ``apply(model)`` sets which
parameters of a timm model train and returns the network to train, ``eval_modules(net)`` names the
sub-modules held in eval mode while training. Config group ``finetune/`` (node ``model.finetune``) picks
one by ``_target_``; a strategy of your own is one subclass plus one YAML file with its ``_target_``.

* ``Full``: every parameter trains.
* ``LinearProbe``: only the head trains; the whole backbone stays in eval mode (batch-norm statistics,
  dropout and drop-path frozen too), so its tensors stay bit-identical.
* ``Partial``: the head and the last ``blocks`` blocks/stages train (timm's coarse ``group_matcher``
  groups, e.g. ViT blocks or ResNet stages; the final norm counts with the last block).
* ``LoRA``: low-rank adapters (rank, alpha, dropout) on the backbone's linear/conv layers through HF peft;
  the head trains in full. Target modules per backbone family (timm ViT ``qkv``/``proj``/``fc1``/``fc2``;
  ResNet ``layerN.M.convK``; other conv nets every non-grouped conv and linear outside stem and head),
  overridable with ``target_modules`` (a list of module-name suffixes, or one regex matched in full).
* ``BitFit``: only biases and the head train.

In every strategy but ``Full``, batch-norm layers whose weight is frozen keep their running statistics
(they are held in eval mode during training), so that everything that does not train stays unchanged.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from timm.models import group_parameters
from torch import nn

from imagelab.core.errors import UserError
from imagelab.core.plain_config import check_int
from lightning_modules.backbones import head_module_name

log = logging.getLogger(__name__)

VIT_TARGETS = r"(.*\.)?blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
"""LoRA targets of timm ViTs (and other models with the same block layout)."""
RESNET_TARGETS = r"layer\d+\.\d+\.conv\d+"
"""LoRA targets of timm ResNets: the convs of every residual block (not the stem, not the downsample)."""


def _in_module(name: str, module: str) -> bool:
    """True when the parameter/module ``name`` lies in the module ``module`` (or is it)."""
    return name == module or name.startswith(module + ".")


def _check_int(key: str, value: Any, low: int) -> int:
    """``value`` when it is an integer >= ``low``, else a UserError naming ``model.finetune.<key>``."""
    return check_int(f"model.finetune.{key}", value, low)


def frozen_batch_norms(net: nn.Module) -> list[str]:
    """Names of the batch-norm layers of ``net`` whose weight does not train (their statistics must not move)."""
    names = []
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            weight = getattr(module, "weight", None)
            if weight is None or not weight.requires_grad:
                names.append(name)
    return names


def train_only(model: nn.Module, trainable: set[str]) -> nn.Module:
    """Let the parameters named in ``trainable`` train and freeze every other one; returns ``model``."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return model


class FinetuneStrategy:
    """One fine-tuning strategy: which parameters of a timm model (with its final head) train.

    Subclasses implement ``apply``; ``eval_modules`` defaults to the frozen batch norms. Constructor
    arguments are the strategy's options (``model.finetune.*``); bad values raise ``UserError``.
    """

    name = "custom"
    """Short name shown in messages (``finetune=<name>``)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Set ``requires_grad`` on ``model``'s parameters; return the network to train (``model`` or a wrapper)."""
        raise NotImplementedError

    def eval_modules(self, net: nn.Module) -> list[str]:
        """Names of the sub-modules of ``net`` (as ``apply`` returned it) held in eval mode while training."""
        return frozen_batch_norms(net)


class Full(FinetuneStrategy):
    """Every parameter trains (the usual fine-tune, or training from scratch)."""

    name = "full"

    def apply(self, model: nn.Module) -> nn.Module:
        """Unfreeze everything."""
        return train_only(model, {n for n, _ in model.named_parameters()})

    def eval_modules(self, net: nn.Module) -> list[str]:
        """Nothing stays in eval mode."""
        return []


class LinearProbe(FinetuneStrategy):
    """Only the head trains; the whole backbone stays in eval mode."""

    name = "linear_probe"

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze everything but the head."""
        head = head_module_name(model)
        return train_only(model, {n for n, _ in model.named_parameters() if _in_module(n, head)})

    def eval_modules(self, net: nn.Module) -> list[str]:
        """Everything but the head and its ancestors."""
        head = head_module_name(net)
        ancestors = {head.rsplit(".", i)[0] for i in range(1, head.count(".") + 1)} | {""}
        return [n for n, _ in net.named_modules() if n not in ancestors and not _in_module(n, head)]


class Partial(FinetuneStrategy):
    """The head and the last ``blocks`` coarse parameter groups (timm ``group_matcher``) train."""

    name = "partial"

    def __init__(self, blocks: int = 1) -> None:
        self.blocks = _check_int("blocks", blocks, 1)

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze everything but the head and the last ``blocks`` groups."""
        return train_only(model, partial_trainable_params(model, self.blocks, head_module_name(model)))


class BitFit(FinetuneStrategy):
    """Only the biases and the head train."""

    name = "bitfit"

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze everything but biases and the head."""
        head = head_module_name(model)
        names = {n for n, _ in model.named_parameters() if n.endswith(".bias") or _in_module(n, head)}
        return train_only(model, names)


class LoRA(FinetuneStrategy):
    """Low-rank adapters (HF peft) on the backbone's Linear/Conv2d layers; the head trains in full."""

    name = "lora"

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: str | list[str] | None = None,
    ) -> None:
        self.rank = _check_int("rank", rank, 1)
        self.alpha = float(alpha)
        if self.alpha <= 0:
            raise UserError(f"model.finetune.alpha must be > 0, got {self.alpha}")
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.finetune.dropout must be in [0, 1), got {self.dropout}")
        if target_modules is not None and not isinstance(target_modules, str):
            if (
                not isinstance(target_modules, list | tuple)
                or not target_modules
                or not all(isinstance(t, str) for t in target_modules)
            ):
                raise UserError(
                    "model.finetune.target_modules must be null, a regex string or a list of module names"
                )
            target_modules = list(target_modules)
        self.target_modules = target_modules

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` in a peft ``PeftModel`` with adapters on the target layers."""
        from peft import LoraConfig, get_peft_model  # here: importing peft costs 0.5 s of CPU, LoRA runs only

        head = head_module_name(model)
        targets = lora_target_modules(model, self.target_modules, head)
        lora_cfg = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            modules_to_save=[head],
            bias="none",
        )
        net = get_peft_model(model, lora_cfg)
        log.info(
            "LoRA rank %d on %d layers (%s, ...), head %s trains in full",
            self.rank,
            len(targets),
            targets[0],
            head,
        )
        return net


STRATEGIES: dict[str, type[FinetuneStrategy]] = {
    cls.name: cls for cls in (Full, LinearProbe, Partial, LoRA, BitFit)
}
"""The shipped strategies by short name (``finetune: {strategy: NAME}`` configs of older checkpoints)."""


def finetune_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``model.finetune`` node as a plain ``{_target_: ..., **options}`` dict (null = ``Full``).

    Also accepts the older ``{strategy: NAME, **options}`` form, so checkpoints written before strategies
    were ``_target_`` nodes keep loading.
    """
    cfg = dict(cfg) if cfg else {}
    if "_target_" not in cfg:
        name = cfg.pop("strategy", "full")
        if name not in STRATEGIES:
            raise UserError(f"unknown finetune strategy {name!r}: use finetune={'|'.join(STRATEGIES)}")
        cls = STRATEGIES[name]
        cfg["_target_"] = f"{cls.__module__}.{cls.__qualname__}"
    return cfg


def build_strategy(cfg: Mapping[str, Any]) -> FinetuneStrategy:
    """The strategy of a ``finetune_config`` dict; unknown classes and options are one-line UserErrors."""
    options = dict(cfg)
    target = str(options.pop("_target_"))
    try:
        cls = get_class(target)
    except Exception:  # Hydra wraps import errors of every kind
        raise UserError(
            f"model.finetune._target_={target} cannot be imported: check the class path"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, FinetuneStrategy)):
        raise UserError(f"model.finetune._target_={target} is not a FinetuneStrategy subclass")
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in options if k not in params)
    if unknown and not takes_any:
        valid = ", ".join(params) or "none"
        raise UserError(
            f"model.finetune.{unknown[0]} is not an option of finetune={cls.name} (its options: {valid})"
        )
    return cls(**options)


def partial_trainable_params(model: nn.Module, blocks: int, head: str) -> set[str]:
    """Names of the parameters that train with ``partial``: the head and the last ``blocks`` groups."""
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
