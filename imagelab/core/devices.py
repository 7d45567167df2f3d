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


def resolve_precision(precision: Any, accelerator: Any = "auto") -> str:
    """Lightning ``precision`` for a config value; ``auto`` picks the fastest one this machine trains well in.

    ``auto`` is ``bf16-mixed`` on a CUDA GPU with bfloat16 (else ``16-mixed``) and on a CPU with AMX tile
    units (Intel Xeon 4th generation and newer, where oneDNN runs bfloat16 convolutions about twice as fast
    as float32), else ``32-true``. The weights stay float32 either way. Any other value is returned as is.
    """
    value = str(precision)
    if value != "auto":
        return value
    on_gpu = str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16-mixed" if amx() else "32-true"
