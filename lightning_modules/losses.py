"""Reconstruction losses for image restoration that torch lacks (``model.loss`` nodes, conf/model/loss/).

mse and l1 are torch's ``nn.MSELoss`` / ``nn.L1Loss``; any ``nn.Module`` called as ``loss(pred, target)`` works.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imagelab.core.errors import UserError


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
