"""Reconstruction losses for image restoration, built by name: mse, l1, charbonnier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from experiment_utils.errors import UserError


class CharbonnierLoss(nn.Module):
    """Charbonnier loss ``mean(sqrt((x - y)**2 + eps**2))``: a smooth L1 that is differentiable at 0."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise UserError(f"charbonnier eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean Charbonnier distance between ``pred`` and ``target``."""
        return torch.sqrt((pred - target) ** 2 + self.eps**2).mean()


LOSSES = ("mse", "l1", "charbonnier")


def build_loss(name: str | Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """Return the loss module named ``name`` (mse | l1 | charbonnier).

    ``name`` may also be a mapping such as ``{"name": "charbonnier", "eps": 1e-3}``; extra keys (or
    ``kwargs``) are options of that loss (only charbonnier has one: ``eps``). Unknown names/options raise
    UserError.
    """
    if isinstance(name, Mapping):
        opts = dict(name)
        name = opts.pop("name", None)
        kwargs = {**opts, **kwargs}
    if name == "mse" and not kwargs:
        return nn.MSELoss()
    if name == "l1" and not kwargs:
        return nn.L1Loss()
    if name == "charbonnier":
        unknown = sorted(set(kwargs) - {"eps"})
        if not unknown:
            return CharbonnierLoss(**kwargs)
        raise UserError(f"unknown option(s) {', '.join(unknown)} for loss charbonnier; valid options: eps")
    if name in LOSSES:
        raise UserError(f"loss {name!r} takes no options, got {', '.join(sorted(kwargs))}")
    raise UserError(f"unknown loss {name!r} in model.loss; valid losses: {', '.join(LOSSES)}")
