"""Stop a run cleanly on SIGTERM/SIGINT: at a batch boundary, at the same step on every process, with last.ckpt.

The signal handler (``imagelab.core.signals``) only records the signal. In one process this callback acts on
it after the current batch (reading a Python flag costs nothing). Under DDP the processes must stop at the
same step, which takes a collective; it runs only at the amortised check points of
``imagelab.callbacks.check_points`` (every ``every_n_steps`` training batches, the last batch of an epoch and
the end of validation), so a signal stops a DDP run within ``every_n_steps`` training batches.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from imagelab.callbacks.check_points import (
    DEFAULT_EVERY,
    any_rank,
    check_interval,
    is_check_batch,
    position,
)
from imagelab.core.checkpoint_io import wait_for_checkpoint_writes
from imagelab.core.errors import RunInterrupted
from imagelab.core.signals import STATE

log = logging.getLogger(__name__)


class GracefulInterrupt(pl.Callback):
    """Turn a recorded SIGTERM/SIGINT into :class:`RunInterrupted` at a batch boundary and save ``last.ckpt``.

    ``every_n_steps``: under DDP, training batches between two agreements of the processes on a signal (one
    collective each); a single process checks after every batch at no cost.
    """

    def __init__(self, every_n_steps: int = DEFAULT_EVERY) -> None:
        self.every = check_interval(every_n_steps, "guard_every_n_steps")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """From now on a signal waits for the end of the current batch."""
        STATE.trainer = trainer

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Outside the Trainer a signal interrupts at once again."""
        STATE.trainer = None

    def _check(self, trainer: pl.Trainer) -> None:
        if any_rank(trainer, STATE.signum is not None):
            raise RunInterrupted(STATE.signum or signal.SIGTERM, position(trainer))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop after this training step when a signal arrived (under DDP: at the next check point)."""
        STATE.trained_steps += 1
        if trainer.world_size == 1 or is_check_batch(trainer, batch_idx, self.every):
            self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Stop after a validation batch when a signal arrived (one process only: under DDP the ranks score
        different numbers of images, so a per-batch agreement would deadlock; they agree when validation ends)."""
        if trainer.world_size == 1:
            self._check(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under DDP, agree on a signal that arrived during validation (every rank gets here)."""
        if trainer.world_size > 1 and not trainer.sanity_checking:
            self._check(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Stop after a test batch when a signal arrived (one process only, as for validation)."""
        if trainer.world_size == 1:
            self._check(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save ``last.ckpt`` when fitting was interrupted by a signal (Lightning's SIGTERM path included)."""
        # after a signal, any error counts as its consequence (e.g. data-loader workers that Ctrl+C ended)
        interrupted = isinstance(exception, RunInterrupted | KeyboardInterrupt) or STATE.signum is not None
        interrupted = interrupted or type(exception).__name__ == "SIGTERMException"
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        fitting = trainer.state.fn is not None and str(trainer.state.fn.value) == "fit"
        if (
            not interrupted
            or not fitting
            or trainer.sanity_checking
            or not dirpath
            or trainer.global_step == 0
        ):
            return
        path = str(Path(dirpath) / "last.ckpt")
        trainer.save_checkpoint(path)
        wait_for_checkpoint_writes(trainer)  # the process is about to end: saved means on disk
        STATE.saved_checkpoint = path
        log.info("saved %s after the interruption (%s)", path, position(trainer))
