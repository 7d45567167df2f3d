"""Task kinds as objects: what the scripts do differently for denoisers, classifiers or a user's own task.

Importing this package registers the built-in kinds (``DENOISING``, ``CLASSIFICATION``); a user's kind
registers itself where it is defined (``MyKind().register(MyModule)``), which the checkpoint's
``model._target_`` imports. :func:`kind_of` finds the kind of a run config.
"""

from __future__ import annotations

from typing import Any

from imagelab.config.kind_registry import model_class, registered_kind
from imagelab.config.run_checkpoint import model_kind
from imagelab.core.errors import UserError
from imagelab.kinds.base import EvalResults, PrunePlan, TaskKind
from imagelab.kinds.classification import CLASSIFICATION, ClassificationKind
from imagelab.kinds.denoising import DENOISING, DenoisingKind

__all__ = [
    "CLASSIFICATION",
    "DENOISING",
    "ClassificationKind",
    "DenoisingKind",
    "EvalResults",
    "PrunePlan",
    "TaskKind",
    "kind_of",
    "require_outputs",
]


def kind_of(run_cfg: Any) -> TaskKind:
    """The task kind of the model a run config describes; a plain ``TaskKind`` named after the model's
    ``_target_`` when none is registered (it is scored and reported generically, never averaged)."""
    kind = registered_kind(model_class(run_cfg))
    return kind if kind is not None else TaskKind(model_kind(run_cfg))


def require_outputs(kind: TaskKind, what: str) -> Any:
    """The kind's output averaging; UserError naming ``what`` (ensembles, tta=...) when it has none."""
    if kind.outputs is None:
        raise UserError(
            f"{what} need models of a task kind that says how to average their outputs, not {kind.name}: "
            "register a TaskKind with `outputs` for its LightningModule (imagelab/kinds/)"
        )
    return kind.outputs
