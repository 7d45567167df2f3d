"""Faults for the cluster tests, loaded into a real run as ``+callbacks.fault._target_=...`` (repository root
on ``PYTHONPATH``): a rank that SIGKILLs itself, and a pause at a known step until a signal arrives."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from imagelab.core.signals import received_signal


class KillRankAtStep(pl.Callback):
    """After training step ``step`` rank ``rank`` SIGKILLs itself (``kill -9``), first writing the time to
    ``marker`` when given; with ``hang_s`` the other ranks then stay that long in this callback, like ranks
    stuck in a collective that never returns."""

    def __init__(
        self,
        step: int,
        rank: int = 1,
        hang_s: float = 0.0,
        marker: str | None = None,
        first_start_only: bool = False,
    ) -> None:
        self.step, self.rank, self.hang_s = int(step), int(rank), float(hang_s)
        self.marker = Path(marker) if marker else None
        self.first_start_only = bool(first_start_only)  # not again once ``marker`` exists (a restarted job)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Kill the chosen rank once, right after the chosen step."""
        if trainer.global_step != self.step:
            return
        if self.first_start_only and self.marker is not None and self.marker.exists():
            return
        if trainer.global_rank == self.rank:
            if self.marker is not None:
                self.marker.write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.hang_s:
            time.sleep(self.hang_s)


class PauseForSignalAtStep(pl.Callback):
    """After training step ``step`` of a job's first start, write ``marker`` and wait (at most ``wait_s``)
    until this process received a signal, so that a test can signal the job at a known step."""

    def __init__(self, step: int, marker: str, wait_s: float = 300.0) -> None:
        self.step, self.marker, self.wait_s = int(step), Path(marker), float(wait_s)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Pause once at the chosen step (not again after a requeue: SLURM_RESTART_COUNT > 0)."""
        if trainer.global_step != self.step or int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
            return
        if trainer.is_global_zero:
            self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.wait_s
        while received_signal() is None and time.monotonic() < deadline:
            time.sleep(0.2)
