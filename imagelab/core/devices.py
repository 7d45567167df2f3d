"""The one place a device name from a config becomes a ``torch.device``."""

from __future__ import annotations

from typing import Any

import torch

from imagelab.core.errors import UserError


def resolve_device(name: str, key: str = "device", trainer: Any | None = None) -> torch.device:
    """``torch.device`` for a config value ``name`` given at config key ``key``.

    ``auto`` is the trainer's root device when a Lightning ``trainer`` is given, else CUDA when a GPU is
    visible, else the CPU. ``cuda``/``cuda:N`` without a visible GPU and anything torch cannot parse raise a
    one-line UserError naming ``key``.
    """
    name = str(name).strip()
    if name == "auto":
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{key}={name} but no CUDA GPU is visible on this machine: use {key}=cpu or {key}=auto"
        )
    return device
