"""Optimizers and per-step LR schedules from plain config dicts, shared by all LightningModules.

Optimizer config: ``{"name": "adam"|"adamw"|"sgd", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999],
"momentum": 0.9, "nesterov": false}`` (betas only for adam/adamw, momentum/nesterov only for sgd).

Scheduler config: ``{"name": "cosine", "warmup_epochs": 1 | "warmup_steps": 500, "min_lr_ratio": 0.01}``,
``{"name": "step", "step_size": 10, "gamma": 0.1}`` (step_size in epochs; warm-up keys allowed too) or
``{"name": "none"}`` / None. Schedules are stepped every optimizer step (Lightning interval "step").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from experiment_utils.errors import UserError
from experiment_utils.plain_config import plain_mapping

_COMMON_OPT_KEYS = {"name", "lr", "weight_decay"}
_OPT_KEYS = {
    "adam": _COMMON_OPT_KEYS | {"betas", "eps"},
    "adamw": _COMMON_OPT_KEYS | {"betas", "eps"},
    "sgd": _COMMON_OPT_KEYS | {"momentum", "nesterov"},
}
_SCHED_KEYS = {
    "none": {"name"},
    "cosine": {"name", "warmup_epochs", "warmup_steps", "min_lr_ratio"},
    "step": {"name", "warmup_epochs", "warmup_steps", "step_size", "gamma"},
}


def _check_keys(cfg: dict[str, Any], allowed: dict[str, set[str]], what: str) -> str:
    """Validate ``cfg["name"]`` and its keys against ``allowed``; return the name."""
    name = cfg.get("name")
    if name not in allowed:
        raise UserError(f"unknown {what} name {name!r}; valid names: {', '.join(sorted(allowed))}")
    unknown = sorted(set(cfg) - allowed[name])
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for {what} {name!r}; "
            f"valid options: {', '.join(sorted(allowed[name]))}"
        )
    return name


def param_groups_without_decay(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    no_decay_names: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Split parameters into a decayed group and a group with ``weight_decay=0``.

    Biases and normalisation weights (every tensor with ndim <= 1), names ending in ``.bias`` and names in
    ``no_decay_names`` (e.g. timm's ``model.no_weight_decay()``) are not decayed. Frozen parameters
    (``requires_grad=False``) are left out; empty groups are dropped. The groups are named ``decay`` and
    ``no_decay`` (the learning-rate monitor's curve names). Pass the result to ``build_optimizer``.
    """
    skip = set(no_decay_names)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(param_groups_or_params: Iterable[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Create the optimizer described by ``cfg`` over parameters or param-group dicts.

    Group dicts keep their own ``weight_decay`` (see ``param_groups_without_decay``); ``cfg`` values are the
    defaults. Unknown names/options or non-positive lr raise UserError.
    """
    cfg = plain_mapping(cfg, "optimizer")
    name = _check_keys(cfg, _OPT_KEYS, "optimizer")
    lr = float(cfg.get("lr", 1e-3))
    if not lr > 0:
        raise UserError(f"optimizer lr must be > 0, got {lr}")
    weight_decay = float(cfg.get("weight_decay", 0.0))
    if weight_decay < 0:
        raise UserError(f"optimizer weight_decay must be >= 0, got {weight_decay}")
    params = list(param_groups_or_params)
    if name in ("adam", "adamw"):
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
        if len(betas) != 2:
            raise UserError(f"optimizer betas must be two numbers like [0.9, 0.999], got {cfg['betas']}")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)), weight_decay=weight_decay)
    momentum = float(cfg.get("momentum", 0.9))
    nesterov = bool(cfg.get("nesterov", False))
    if nesterov and momentum <= 0:
        raise UserError("optimizer nesterov=true needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def lr_factor(
    step: int,
    *,
    name: str,
    total_steps: float,
    warmup_steps: int,
    min_lr_ratio: float = 0.0,
    step_size_steps: int = 1,
    gamma: float = 0.1,
) -> float:
    """LR multiplier at optimizer step ``step`` (0-based) for schedule ``name`` (see ``build_scheduler``)."""
    warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if name == "cosine":
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if name == "step":
        return warm * gamma ** (max(step - warmup_steps, 0) // step_size_steps)
    return warm


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any] | None,
    total_steps: float,
    steps_per_epoch: int,
) -> dict[str, Any] | None:
    """Return a Lightning lr-scheduler dict (interval "step") for ``cfg``, or None for no schedule.

    ``total_steps`` is the number of optimizer steps of the whole run
    (``trainer.estimated_stepping_batches``), ``steps_per_epoch`` the optimizer steps per epoch (converts
    ``warmup_epochs`` and ``step_size``).
    cosine: linear warm-up to the base LR, then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``.
    step: LR multiplied by ``gamma`` every ``step_size`` epochs (after the warm-up, if any).
    """
    if cfg is None:
        return None
    cfg = plain_mapping(cfg, "scheduler")
    name = _check_keys(cfg, _SCHED_KEYS, "scheduler")
    if name == "none":
        return None
    steps_per_epoch = max(1, int(steps_per_epoch))
    if "warmup_steps" in cfg and "warmup_epochs" in cfg:
        raise UserError("scheduler: give warmup_steps or warmup_epochs, not both")
    if "warmup_steps" in cfg:
        warmup = int(cfg["warmup_steps"])
    else:
        warmup = round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    if warmup < 0:
        raise UserError(f"scheduler warm-up must be >= 0, got {warmup} steps")
    kwargs: dict[str, Any] = {"name": name, "warmup_steps": warmup}
    if name == "cosine":
        if not math.isfinite(total_steps):
            raise UserError(
                "the cosine scheduler needs a finite run: set trainer.max_epochs or trainer.max_steps"
            )
        ratio = float(cfg.get("min_lr_ratio", 0.0))
        if not 0.0 <= ratio <= 1.0:
            raise UserError(f"scheduler min_lr_ratio must be in [0, 1], got {ratio}")
        kwargs.update(total_steps=float(total_steps), min_lr_ratio=ratio)
    else:
        step_size = float(cfg.get("step_size", 30))
        if step_size <= 0:
            raise UserError(f"scheduler step_size (epochs) must be > 0, got {step_size}")
        kwargs.update(
            total_steps=float(total_steps),
            step_size_steps=max(1, round(step_size * steps_per_epoch)),
            gamma=float(cfg.get("gamma", 0.1)),
        )
    if math.isfinite(total_steps) and warmup > total_steps:
        warnings.warn(
            f"LR warm-up ({warmup} steps) is longer than the run ({int(total_steps)} steps); "
            "the LR will not reach its base value",
            stacklevel=2,
        )

    def factor(step: int) -> float:
        return lr_factor(step, **kwargs)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
