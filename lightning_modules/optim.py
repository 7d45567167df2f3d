"""Optimizers and per-step LR schedules from the ``model.optimizer`` / ``model.scheduler`` config nodes.

Both nodes are ``_partial_`` Hydra nodes (presets in ``conf/model/optimizer/`` and ``conf/model/scheduler/``),
kept as plain dicts in the module's hyper-parameters and built in ``configure_optimizers``:

- ``model.optimizer`` is called with the network. Its usual target, ``create_optimizer``, is a thin layer over
  timm's ``create_optimizer_v2``: every timm optimizer name (``opt: adamw | adam | sgd | momentum | lion |
  lamb | adabelief | ...``), timm's parameter groups (no weight decay on biases, norms or the model's
  ``no_weight_decay()`` tensors), layer-wise LR decay (``layer_decay``) and a head LR (``head_lr``). A
  ``torch.optim.Optimizer`` class as target gets timm's weight-decay groups instead of the network.
- ``model.scheduler`` is called with the optimizer; ``total_steps`` (optimizer steps of the whole run, from
  ``trainer.estimated_stepping_batches``) and ``steps_per_epoch`` are passed when its target takes them.
  ``warmup_cosine`` and ``warmup_step`` are torch's ``LinearLR`` warm-up chained (``SequentialLR``) with a
  cosine decay / ``StepLR``. Schedules are stepped every optimizer step (Lightning interval "step").
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LinearLR, LRScheduler, SequentialLR, StepLR

from imagelab.config.instantiation import instantiate_node, require_target
from imagelab.core.errors import UserError, first_line


def _group_label(name: str, head: str | None, layer: int | None) -> str:
    if head and (name == head or name.startswith(head + ".")):
        return "head"
    if layer is not None:
        return f"layer{layer}"
    return "backbone" if head else ""


def _check_optimizer_values(lr: float, weight_decay: float, layer_decay: Any, head_lr: Any) -> None:
    """UserError naming the ``model.optimizer`` key whose value is out of range."""
    if not lr > 0:
        raise UserError(f"model.optimizer.lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise UserError(f"model.optimizer.weight_decay must be >= 0, got {weight_decay}")
    if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
        raise UserError(f"model.optimizer.layer_decay must be in (0, 1] or null (off), got {layer_decay}")
    if head_lr is not None and not float(head_lr) > 0:
        raise UserError(f"model.optimizer.head_lr must be > 0 or null (= lr), got {head_lr}")


def _timm_groups(
    model: nn.Module, weight_decay: float, layer_decay: Any
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """timm's parameter groups of ``model`` and, with ``layer_decay`` < 1, each group's depth from the top.

    The depth of group ``i`` is ``n`` where its ``lr_scale`` is ``layer_decay ** n``; no depths without decay.
    """
    no_wd = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    if layer_decay is None or float(layer_decay) >= 1.0:
        return param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=no_wd), {}
    with warnings.catch_warnings():  # timm warns when a model without group_matcher() has one layer
        warnings.simplefilter("ignore")
        groups = param_groups_layer_decay(
            model, weight_decay=weight_decay, no_weight_decay_list=no_wd, layer_decay=float(layer_decay)
        )
    depth = {i: round(math.log(g["lr_scale"]) / math.log(float(layer_decay))) for i, g in enumerate(groups)}
    return groups, depth


def _named(merged: dict[tuple[str, float], dict[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """The merged groups in a stable order (head last), named for the LR monitor (``_no_decay`` halves)."""
    out = []
    for (label, wd), group in sorted(
        merged.items(), key=lambda kv: (kv[0][0] == "head", kv[0][0], -kv[0][1])
    ):
        suffix = "_no_decay" if wd == 0.0 and weight_decay > 0 else ""
        group["name"] = (label + suffix) if label else ("no_decay" if suffix else "decay")
        out.append(group)
    return out


def create_optimizer(
    model: nn.Module,
    opt: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    layer_decay: float | None = None,
    head_lr: float | None = None,
    head: str | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` over ``model``'s trainable parameters, with named parameter groups.

    ``opt``: any timm optimizer name; ``kwargs`` go to it (``betas``, ``eps``, ``momentum``, ...). Weight decay
    is never applied to biases, norm weights or ``model.no_weight_decay()`` (timm's
    ``param_groups_weight_decay``). ``layer_decay`` < 1: timm's ``param_groups_layer_decay`` (each earlier
    layer group's LR times that factor, BEiT-style); the scale is folded into each group's ``lr`` so torch's
    schedulers keep it. ``head`` (the head module's name, given by the classifier) puts the head's parameters in
    their own group with LR ``head_lr`` (default ``lr``). Groups are named for the LR monitor: ``decay`` /
    ``no_decay`` (plain network), ``backbone``/``head`` or ``layerN``/``head``, ``_no_decay`` halves.
    """
    lr, weight_decay = float(lr), float(weight_decay)
    _check_optimizer_values(lr, weight_decay, layer_decay, head_lr)
    groups, depth = _timm_groups(model, weight_decay, layer_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    bottom = max(depth.values(), default=0)
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for i, group in enumerate(groups):
        for param in group["params"]:
            label = _group_label(names[id(param)], head, bottom - depth[i] if depth else None)
            if label == "head":
                group_lr = float(head_lr) if head_lr is not None else lr
            else:
                group_lr = lr * float(group.get("lr_scale", 1.0))
            key = (label, float(group["weight_decay"]))
            merged.setdefault(key, {"params": [], "lr": group_lr, "weight_decay": key[1]})["params"].append(
                param
            )
    if not merged:
        raise UserError("the model has no trainable parameter for the optimizer")
    out = _named(merged, weight_decay)
    return create_optimizer_v2(out, opt=opt, lr=lr, weight_decay=weight_decay, **kwargs)


def _factory(node: Mapping[str, Any] | None, what: str) -> Callable[..., Any] | None:
    """The callable a ``_partial_`` node describes; None for a null/empty node."""
    if node is None or (isinstance(node, Mapping) and not node):
        return None
    factory = instantiate_node(require_target(node, what), what)
    if not callable(factory):
        raise UserError(f"{what} must build a callable: add _partial_: true to it")
    return factory


def _accepted(factory: Callable[..., Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``context`` that ``factory`` names as parameters (not through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return {k: v for k, v in context.items() if k in named and v is not None}


def _call(factory: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build '{what}': {first_line(exc)}; check its keys with --cfg job") from exc


def build_optimizer(
    node: Mapping[str, Any] | None, model: nn.Module, **context: Any
) -> torch.optim.Optimizer:
    """The optimizer of ``model`` described by the ``model.optimizer`` node (see the module docstring).

    ``context`` (e.g. ``head``) is passed when the target takes it by name. A ``torch.optim.Optimizer`` class
    gets timm's ``param_groups_weight_decay`` of ``model`` with the node's ``weight_decay``.
    """
    factory = _factory(node, "model.optimizer")
    if factory is None:
        raise UserError("model.optimizer is empty: pick a preset with model/optimizer=NAME")
    func = factory.func if isinstance(factory, functools.partial) else factory
    if isinstance(func, type) and issubclass(func, torch.optim.Optimizer):
        wd = float(getattr(factory, "keywords", {}).get("weight_decay", 0.0))
        return _call(factory, "model.optimizer", param_groups_weight_decay(model, weight_decay=wd))
    return _call(factory, "model.optimizer", model, **_accepted(factory, context))


def build_scheduler(
    node: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer, total_steps: float, steps_per_epoch: int
) -> dict[str, Any] | None:
    """A Lightning lr-scheduler dict (interval "step") from the ``model.scheduler`` node; None for no schedule."""
    factory = _factory(node, "model.scheduler")
    if factory is None:
        return None
    context = {"total_steps": total_steps, "steps_per_epoch": max(1, int(steps_per_epoch))}
    scheduler = _call(factory, "model.scheduler", optimizer, **_accepted(factory, context))
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}


def check_optimization(optimizer: Mapping[str, Any] | None, scheduler: Mapping[str, Any] | None) -> None:
    """Build both nodes on a tiny network, so that a bad target or option fails at construction (UserError)."""
    dummy = build_optimizer(optimizer, nn.Linear(2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_scheduler(scheduler, dummy, total_steps=1000, steps_per_epoch=10)


def configure_optimization(
    module: Any,
    model: nn.Module,
    optimizer: Mapping[str, Any] | None,
    scheduler: Mapping[str, Any] | None,
    **context: Any,
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: ``model``'s optimizer and its per-step schedule."""
    opt = build_optimizer(optimizer, model, **context)
    trainer = module.trainer
    total_steps = trainer.estimated_stepping_batches
    if trainer.train_dataloader is None:
        # max_steps-only runs skip this inside estimated_stepping_batches; it is not repeated later
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    if math.isfinite(batches):
        steps_per_epoch = max(1, -(-int(batches) // accumulate))
    else:  # iterable loader without a length: an "epoch" is the whole run (or 1 step if unbounded)
        steps_per_epoch = max(1, int(total_steps)) if math.isfinite(total_steps) else 1
    sched = build_scheduler(scheduler, opt, total_steps, steps_per_epoch)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


# ------------------------------------------------------------------------------------------------ schedules
def _warmup_steps(warmup_epochs: float | None, warmup_steps: int | None, steps_per_epoch: int) -> int:
    """Warm-up length in optimizer steps: ``warmup_steps`` when given (it replaces ``warmup_epochs``)."""
    steps = (
        int(warmup_steps) if warmup_steps is not None else round(float(warmup_epochs or 0) * steps_per_epoch)
    )
    if steps < 0:
        raise UserError(f"model.scheduler warm-up must be >= 0, got {steps} steps")
    return steps


def _with_warmup(
    optimizer: torch.optim.Optimizer, main: LRScheduler, warmup: int, total: float
) -> LRScheduler:
    """``main`` after a linear warm-up from lr/warmup to lr over ``warmup`` steps (torch ``SequentialLR``)."""
    if math.isfinite(total) and warmup > total:
        warnings.warn(
            f"LR warm-up ({warmup} steps) is longer than the run ({int(total)} steps); "
            "the LR will not reach its base value",
            stacklevel=3,
        )
    if warmup <= 1:  # a one-step warm-up starts at the base LR: nothing to chain
        return main
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: float,
    steps_per_epoch: int = 1,
    warmup_epochs: float | None = 0.0,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Linear warm-up to each group's LR, then cosine decay to ``min_lr_ratio`` x that LR at ``total_steps``.

    The warm-up lasts ``warmup_steps`` optimizer steps if given, else ``warmup_epochs`` x ``steps_per_epoch``. The cosine
    is torch's ``CosineAnnealingLR`` formula as a ``LambdaLR`` factor: ``CosineAnnealingLR`` takes one absolute
    ``eta_min``, which cannot end each parameter group (head, layer-decayed layers) at its own fraction.
    """
    if not math.isfinite(total_steps):
        raise UserError(
            "the cosine scheduler needs a finite run: set trainer.max_epochs or trainer.max_steps"
        )
    ratio = float(min_lr_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"model.scheduler.min_lr_ratio must be in [0, 1], got {ratio}")
    warmup = _warmup_steps(warmup_epochs, warmup_steps, steps_per_epoch)
    span = max(1.0, float(total_steps) - warmup)

    def factor(step: int) -> float:
        progress = min(max(step / span, 0.0), 1.0)
        return ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    if warmup == 1:  # the decay starts after the one warm-up step, as with longer warm-ups
        return LambdaLR(optimizer, lambda step: factor(step - 1))
    return _with_warmup(optimizer, LambdaLR(optimizer, factor), warmup, total_steps)


def warmup_step(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int = 1,
    step_size: float = 30,
    gamma: float = 0.1,
    warmup_epochs: float | None = 0.0,
    warmup_steps: int | None = None,
    total_steps: float = math.inf,
) -> LRScheduler:
    """Optional linear warm-up, then the LR times ``gamma`` every ``step_size`` epochs (torch ``StepLR``)."""
    if not float(step_size) > 0:
        raise UserError(f"model.scheduler.step_size (epochs) must be > 0, got {step_size}")
    warmup = _warmup_steps(warmup_epochs, warmup_steps, steps_per_epoch)
    main = StepLR(optimizer, step_size=max(1, round(float(step_size) * steps_per_epoch)), gamma=float(gamma))
    return _with_warmup(optimizer, main, warmup, total_steps)
