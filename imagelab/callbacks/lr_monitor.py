"""Lightning's learning-rate monitor with curves named by parameter group: ``lr/backbone``, ``lr/head``.

Lightning names the curves ``lr-<Optimizer>/<group name>`` (``lr-AdamW/head``, or ``lr-Adam/pg1`` for unnamed
groups). With one optimizer the optimizer's class says nothing, so here the curves are ``lr/<group>``; the
``decay``/``no_decay`` split of a group (``lightning_modules.optim.param_groups_without_decay``) is folded
into one curve when both halves have the same learning rate (they always do unless a scheduler treats them
differently), so a classifier shows ``lr/backbone`` and ``lr/head`` and a denoiser shows ``lr``. Momentum and
weight-decay curves (``log_momentum``/``log_weight_decay``) become ``momentum/<group>``/``weight_decay/<group>``.
The class keeps Lightning's name, so code that looks for a ``LearningRateMonitor`` still finds it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor

_KEY = re.compile(r"^lr-[A-Za-z0-9_]+(?:-\d+)?(?:/(?P<group>[^\s]+?))?(?:-(?P<stat>momentum|weight_decay))?$")
_DECAY_SUFFIX = re.compile(r"(?:^|_)(?:no_)?decay$")


def _group_base(group: str | None) -> str:
    return _DECAY_SUFFIX.sub("", group or "")


def rename_lr_stats(stats: dict[str, float]) -> dict[str, float]:
    """Map Lightning's ``lr-<Optimizer>[/<group>][-momentum]`` keys to ``lr[/<group>]`` (see module docstring).

    Keys of several optimizers (``lr-Adam`` and ``lr-SGD``) are returned unchanged: there the optimizer's
    name is what tells the curves apart.
    """
    parsed = {key: _KEY.match(key) for key in stats}
    optimizers = {key.split("/")[0].split("-momentum")[0].split("-weight_decay")[0] for key in stats}
    if not stats or any(m is None for m in parsed.values()) or len(optimizers) > 1:
        return dict(stats)
    renamed: dict[str, float] = {}
    by_base: dict[str, list[tuple[str, str, float]]] = {}
    for key, value in stats.items():
        match = parsed[key]
        assert match is not None
        stat = match.group("stat") or "lr"
        group = match.group("group")
        base = _group_base(group)
        by_base.setdefault(f"{stat}/{base}" if base else stat, []).append((stat, group or "", value))
    for new_key, items in by_base.items():
        if len({round(v, 12) for _, _, v in items}) == 1:
            renamed[new_key] = items[0][2]
        else:  # the halves of a group differ: keep one curve per original group
            for stat, group, value in items:
                renamed[f"{stat}/{group}" if group else stat] = value
    return renamed


class LearningRateMonitor(_LightningLearningRateMonitor):
    """``lightning.pytorch.callbacks.LearningRateMonitor`` whose curves are named ``lr/<param group>``.

    Same arguments as Lightning's (``logging_interval``, ``log_momentum``, ``log_weight_decay``).
    """

    def _extract_stats(self, trainer: Any, interval: str) -> dict[str, float]:
        """Lightning's stats under the short names; ``trainer.callback_metrics`` gets the same names."""
        stats = super()._extract_stats(trainer, interval)
        renamed = rename_lr_stats(stats)
        if renamed.keys() != stats.keys():
            for key in stats:
                trainer.callback_metrics.pop(key, None)
            device = trainer.strategy.root_device
            trainer.callback_metrics.update({k: torch.tensor(v, device=device) for k, v in renamed.items()})
        return renamed
