"""Structured channel pruning with torch-pruning: whole conv channels are removed (L1 magnitude, the same
fraction ``amount`` in every layer), so the network really gets narrower and faster; the result is a new
checkpoint of the narrower architecture that ``train.py model.checkpoint_path=...`` fine-tunes.

What is supported is the task kind's to say (``TaskKind.prune_plan``): DnCNN denoisers (every hidden layer
keeps ``width`` channels) and ``small_cnn`` classifiers (one width per stage), i.e. nets whose pruned widths
the model config can describe; the final conv (denoiser) and the classification head keep their outputs.
Other architectures get a clear error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from imagelab.config.instantiation import instantiate_node
from imagelab.config.run_checkpoint import build_module_from_checkpoint
from imagelab.core.constants import HYDRA_DIR, RUN_CONFIG_KEY
from imagelab.core.errors import UserError, first_line
from imagelab.deploy.source import DeploySource


def prune_network(net: nn.Module, example: Tensor, amount: float, keep: list[nn.Module]) -> None:
    """Remove ``amount`` of the output channels of every prunable layer of ``net`` in place (L1 magnitude)."""
    import torch_pruning as tp  # lazy: optional (deploy extra) and slow to import; only method=prune uses it

    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=float(amount),
        ignored_layers=keep,
        global_pruning=False,  # the same fraction everywhere: the widths stay describable by the config
    )
    pruner.step()


def prune_checkpoint(source: DeploySource, amount: float, example: Tensor) -> tuple[Any, dict[str, Any]]:
    """Prune a fresh copy of the checkpoint's model; returns (the pruned LightningModule, the new checkpoint)."""
    if not 0.0 < float(amount) < 1.0:
        raise UserError(f"amount must be a fraction in (0, 1), got {amount}")
    module = build_module_from_checkpoint(source.checkpoint, source.run_cfg)
    plan = source.kind.prune_plan(module, source.run_cfg)  # fails early for unsupported nets
    net = plan.net.eval()
    with torch.enable_grad():  # torch-pruning traces the dependency graph with autograd
        prune_network(net, example[:1].clone(), amount, plan.keep)
    key, before, after = plan.setting(net)
    run_cfg = copy.deepcopy(source.run_cfg)
    OmegaConf.update(run_cfg, key, after, force_add=True)
    for node, value in plan.config_updates.items():  # e.g. LoRA merged: the pruned classifier trains in full
        OmegaConf.update(run_cfg, node, value, merge=False, force_add=True)
    pruned = instantiate_node(run_cfg.model, "model")
    target = pruned.net
    try:
        target.load_state_dict(net.state_dict(), strict=True)
    except RuntimeError as exc:
        raise UserError(f"the pruned network does not fit {key}={after}: {first_line(exc)}") from None
    pruned.eval()
    info = {
        "method": "structured L1-magnitude channel pruning (torch-pruning MetaPruner), same fraction per layer",
        "amount": float(amount),
        "source_checkpoint": str(source.path),
        "changed": {key: {"before": before, "after": after}},
    }
    checkpoint = {
        "state_dict": {k: v.detach().clone() for k, v in pruned.state_dict().items()},
        RUN_CONFIG_KEY: OmegaConf.to_container(run_cfg, resolve=True),
        "hyper_parameters": json.loads(json.dumps(dict(pruned.hparams), default=str)),
        "pruning": info,
    }
    return pruned, checkpoint


def finetune_overrides(source: DeploySource, checkpoint: dict[str, Any], pruned_path: Path) -> list[str]:
    """The overrides that make ``scripts/train.py`` fine-tune the pruned checkpoint (after the run's own)."""
    overrides: list[str] = []
    saved = source.path.parent.parent / HYDRA_DIR / "overrides.yaml"
    if saved.is_file():
        changed = set(checkpoint["pruning"]["changed"])
        overrides = [o for o in OmegaConf.load(saved) if str(o).split("=", 1)[0].lstrip("+~") not in changed]
    for key, change in checkpoint["pruning"]["changed"].items():
        value = change["after"]
        overrides.append(f"{key}={json.dumps(value).replace(' ', '')}")
    overrides.append(f"model.checkpoint_path={pruned_path}")
    return [str(o) for o in overrides]
