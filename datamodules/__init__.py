"""LightningDataModules and data readers (image files, CIFAR-10, noise models for synthetic denoising pairs).

This package file stays import-free so that entry points start fast; ``datamodules.DenoisingDataModule``
is resolved lazily on first access (it imports torch and lightning).
"""

from __future__ import annotations

from typing import Any

_LAZY = {"DenoisingDataModule": "datamodules.denoising"}


def __getattr__(name: str) -> Any:
    """Import the heavy public classes only when they are first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


__all__ = ["DenoisingDataModule"]
