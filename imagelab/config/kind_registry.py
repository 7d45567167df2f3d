"""Which task kind a LightningModule class is, for the scripts that open its checkpoints.

A task kind (``imagelab.kinds.TaskKind``: denoising, classification, or a user's own) registers the module
classes it serves when its module is imported. The built-in kinds register in ``imagelab.kinds``; a user's kind
registers where the user defines it, which a checkpoint's ``model._target_`` imports. Lookups follow the class
hierarchy: a subclass of a registered module is of its parent's kind unless it registers its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

_KINDS: dict[type, Any] = {}


def register_kind(module_class: type, kind: Any) -> None:
    """Record that checkpoints of ``module_class`` (and its subclasses) hold a model of task kind ``kind``."""
    _KINDS[module_class] = kind


def registered_kind(module_class: type | None) -> Any | None:
    """The task kind registered for ``module_class`` or its nearest registered base class; None if none is."""
    for cls in getattr(module_class, "__mro__", ()):
        if cls in _KINDS:
            return _KINDS[cls]
    return None


def kind_name(module_class: type | None) -> str:
    """The name of ``module_class``'s task kind (e.g. ``denoiser``), or the class name when it has none."""
    kind = registered_kind(module_class)
    return str(kind.name) if kind is not None else getattr(module_class, "__name__", "?")


def model_class(run_config: Mapping[str, Any]) -> type | None:
    """The LightningModule class a run config's ``model._target_`` names (imported, which registers a user's
    kind); None when there is no target or it cannot be imported."""
    target = str((run_config.get("model") or {}).get("_target_") or "")
    module_name, _, class_name = target.rpartition(".")
    if not module_name:
        return None
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None
