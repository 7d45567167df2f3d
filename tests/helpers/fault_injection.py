"""Callbacks (and a checkpoint plugin) that inject a fault into a real training run, for the fault-injection tests.

Load one into a run started by a test with e.g.
``+callbacks.fault._target_=tests.helpers.fault_injection.SignalAtStep +callbacks.fault.step=4`` (the run
needs the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

import lightning.pytorch as pl
import torch

from imagelab.core.checkpoint_io import AtomicCheckpointIO


class SignalAtStep(pl.Callback):
    """Send ``signum`` (a name such as SIGTERM) to this very process after training step ``step``."""

    def __init__(self, step: int, signum: str = "SIGTERM") -> None:
        self.step = int(step)
        self.signum = signal.Signals[signum]

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Deliver the signal once, right after the chosen step."""
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonWeightsAtStep(pl.Callback):
    """Fill the model's first weight with NaN after training step ``step`` (the next loss is NaN)."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Corrupt one parameter once, right after the chosen step."""
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class DiskFullAtValidation(pl.Callback):
    """Raise 'No space left on device' for ``<run dir>/panel.png`` when the first validation ends."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fail like a write on a full disk (outside the sanity check)."""
        if not trainer.sanity_checking:
            path = os.path.join(str(trainer.checkpoint_callback.dirpath), "..", "panel.png")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.normpath(path))


class CheckpointIOOnAFullDisk(AtomicCheckpointIO):
    """The project's checkpoint plugin on a disk that fills up half-way through every checkpoint file (load it
    with ``checkpoint_io._target_=tests.helpers.fault_injection.CheckpointIOOnAFullDisk``)."""

    def serialize(self, checkpoint: dict[str, Any], path: str) -> None:
        """Write part of the file, then fail like a write on a full disk."""
        with open(path, "wb") as handle:
            handle.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
