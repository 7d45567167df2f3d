"""Checks of data options and the one DataLoader builder the data modules share.

``pin_memory: auto`` means the same for every data module: pinned when the Trainer's device (or, without a
Trainer, the machine) is a CUDA GPU, where Lightning's non-blocking host-to-device copies then overlap with
compute.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from imagelab.core import plain_config
from imagelab.core.devices import resolve_device
from imagelab.core.errors import UserError


def check_int(key: str, value: Any, low: int, allow_none: bool = False) -> Any:
    """``value``; UserError naming ``data.<key>`` unless it is an integer >= ``low`` (or None when allowed)."""
    return plain_config.check_int(f"data.{key}", value, low, allow_none)


def check_pin_memory(pin_memory: Any) -> bool | str:
    """``data.pin_memory`` when it is true, false or ``auto``, else UserError."""
    if pin_memory != "auto" and not isinstance(pin_memory, bool):
        raise UserError(f"data.pin_memory must be true, false or auto, got {pin_memory!r}")
    return pin_memory


def resolve_pin_memory(pin_memory: bool | str, trainer: Any | None) -> bool:
    """``data.pin_memory`` as a bool: ``auto`` = pinned when the trainer's device (or, without a trainer, the
    machine) is a CUDA GPU."""
    if pin_memory != "auto":
        return bool(pin_memory)
    return resolve_device("auto", "data.pin_memory", trainer).type == "cuda"


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    trainer: Any | None,
    num_workers: int,
    pin_memory: bool | str,
    persistent_workers: bool,
    prefetch_factor: int | None = None,
    sampler: Sampler | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the data module's worker options; ``pin_memory`` may be ``auto`` (see the module
    docstring), ``persistent_workers`` and ``prefetch_factor`` only apply with ``num_workers > 0``."""
    extra: dict[str, Any] = {}
    if num_workers > 0 and prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=resolve_pin_memory(pin_memory, trainer),
        persistent_workers=bool(persistent_workers) and num_workers > 0,
        **extra,
    )
