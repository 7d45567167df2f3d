"""Keep Lightning from calling the callbacks' per-step hooks that do nothing.

For every hook, Lightning's ``_call_callback_hooks`` visits every callback of the Trainer: it reads the
callback's ``state_key`` (ModelCheckpoint and EarlyStopping build it from their settings each time), formats
a profiler action name, enters the profiler's context and calls the hook, even where the hook is
``Callback``'s empty one. With the default run's 14 callbacks and 6 hooks per training step that is about
0.3 ms of CPU per step (docs/scaling.md), more than the whole step of a small model on a GPU. Lightning
skips a callback whose hook attribute is not callable, so ``SkipNoOpStepHooks`` sets the per-step hooks that
a callback's class does not override to ``None`` on the instance while a stage runs (and removes them again
in ``teardown``). Hooks a callback implements are untouched, and so is the order of the calls.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


def no_op_step_hooks(callback: pl.Callback) -> list[str]:
    """The per-step hooks (``STEP_HOOKS``) that ``callback``'s class inherits unchanged from ``Callback``."""
    cls = type(callback)
    return [h for h in STEP_HOOKS if getattr(cls, h, None) is getattr(pl.Callback, h)]


class SkipNoOpStepHooks(pl.Callback):
    """Hide the empty per-step hooks of every callback of the Trainer from Lightning's dispatch (see above)."""

    def __init__(self) -> None:
        self._hidden: list[tuple[Any, str]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Set each callback's empty per-step hooks to None (this callback's own included)."""
        for callback in trainer.callbacks:
            for hook in no_op_step_hooks(callback):
                if hook in vars(callback):  # set by the callback itself: leave it
                    continue
                setattr(callback, hook, None)
                self._hidden.append((callback, hook))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give the callbacks their inherited hooks back."""
        for callback, hook in self._hidden:
            vars(callback).pop(hook, None)
        self._hidden.clear()
