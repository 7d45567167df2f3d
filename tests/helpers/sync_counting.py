"""Count, per training batch, Python-level collectives and the project's host reads of tensors.

``SyncCounter`` is a callback (load it into a real run with
``+callbacks.sync_counter._target_=tests.helpers.sync_counting.SyncCounter +callbacks.sync_counter.path=P``).
From ``setup`` to ``teardown`` it wraps the ``torch.distributed`` collectives (the DDP gradient all-reduce
runs in C++ buckets and is not counted), counted as ``collectives`` when the project's step code (callbacks,
loggers, modules, data) is on the stack and as ``lightning_collectives`` otherwise (Lightning 2.6 broadcasts
rank 0's SIGTERM flag before every step under DDP), and the ``Tensor`` methods that read a value on the host
(``item``, ``__bool__``, ``__float__``, ``__int__``, ``tolist``, ``cpu``, ``numpy``) when called directly
from the project's model-side packages (``imagelab/``, ``lightning_modules/``), as ``host_reads``. Each training batch's window
runs from its ``on_train_batch_start`` to the next batch's, or to the start of validation / the end of the
epoch for an epoch's last batch. The windows are written to ``path`` (``<path>.rank<N>`` under DDP) as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
# model-side code (data loading reads its own host tensors, e.g. indices, by design)
PROJECT_DIRS = tuple(str(ROOT / d) for d in ("imagelab", "lightning_modules"))
# code that runs inside a training step (not imagelab/tasks, which is below Lightning's loop on every stack)
STEP_CODE_DIRS = tuple(
    str(ROOT / d) for d in ("imagelab/callbacks", "imagelab/tracking", "lightning_modules", "datamodules")
)
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "barrier",
)
HOST_READS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


def _from_step_code(frame: Any) -> bool:
    """Whether a frame of the project's step code (STEP_CODE_DIRS) is on the stack of ``frame``."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(STEP_CODE_DIRS):
            return True
        frame = frame.f_back
    return False


def _where(frame: Any, depth: int = 4) -> str:
    """``file:line`` of ``frame`` and up to ``depth - 1`` callers, innermost first."""
    places = []
    while frame is not None and len(places) < depth:
        places.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        frame = frame.f_back
    return " <- ".join(places)


class SyncCounter(pl.Callback):
    """Per training batch: collectives and project host reads (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts = {"collectives": 0, "host_reads": 0, "lightning_collectives": 0}
        self.windows: list[dict[str, Any]] = []
        self.calls: list[str] = []  # what was counted in the open window, with its callers
        self._open: dict[str, Any] | None = None
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, kind: str, direct: bool) -> None:
        original = getattr(owner, name)
        counts, calls = self.counts, self.calls

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PROJECT_DIRS) if direct else _from_step_code(caller):
                counts[kind] += 1
                calls.append(f"{name} <- {_where(caller)}")
            elif not direct:
                counts["lightning_collectives"] += 1
            return original(*args, **kwargs)

        self._saved.append((owner, name, original))
        setattr(owner, name, wrapper)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Start counting."""
        for name in COLLECTIVES:
            self._wrap(dist, name, "collectives", direct=False)
        for name in HOST_READS:
            self._wrap(torch.Tensor, name, "host_reads", direct=True)

    def _close(self) -> None:
        if self._open is not None:
            for kind, value in self.counts.items():
                self._open[kind] = value - self._open.pop(f"_{kind}")
            self._open["calls"] = self.calls[:]
            self.calls.clear()
            self.windows.append(self._open)
            self._open = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Close the previous batch's window, open this one's."""
        self._close()
        self.calls.clear()
        self._open = {
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "last": batch_idx + 1 >= trainer.num_training_batches,
            **{f"_{k}": v for k, v in self.counts.items()},
        }

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """An epoch's last batch ends where validation starts."""
        self._close()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """... or where the epoch ends."""
        self._close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Stop counting; write the windows."""
        self._close()
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
        path = self.path if trainer.world_size == 1 else f"{self.path}.rank{trainer.global_rank}"
        Path(path).write_text(json.dumps(self.windows))
