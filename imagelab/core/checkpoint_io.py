"""Checkpoint files that are either complete or absent, whatever kills the process while one is written."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.apply_func import apply_to_collection

from imagelab.core.atomic import atomic_link, atomic_write
from imagelab.core.background_writes import OrderedBackgroundWrites


def host_snapshot(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A point-in-time copy of ``checkpoint`` with every tensor copied to host memory (training changes the
    weights and optimizer states in place right after a save)."""
    return apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))


def uploads_checkpoints(loggers: Iterable[Any]) -> bool:
    """Whether a logger reads checkpoint files as they are saved (W&B/MLflow/Neptune ``log_model``)."""
    return any(getattr(logger, "_log_model", False) for logger in loggers)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with a local write that cannot leave a truncated ``.ckpt`` behind, by
    default written on a background thread.

    Lightning's own save goes through fsspec, whose local "transaction" writes to a temp file in ``$TMPDIR``
    and moves it into place: when ``$TMPDIR`` is another file system (tmpfs ``/tmp``, a network home) that
    move is a copy, so ``kill -9`` or a full disk leaves a truncated checkpoint beside good ones and a
    full-size leftover in ``$TMPDIR``. Here the checkpoint is written to a temp file in its own folder, flushed
    with ``fsync`` and renamed over the target (:func:`imagelab.core.atomic.atomic_write`). Remote paths
    (``s3://`` ...) keep Lightning's behaviour.

    ``background=True``: the save copies the state to host memory on the training thread and returns; the
    serialisation, write, fsync and rename happen on one background thread (:class:`OrderedBackgroundWrites`),
    in order with this plugin's links and removals. At most one such copy exists: a save first waits for the
    previous write. Loading a checkpoint, the Trainer's teardown and :meth:`wait` also finish the queued
    writes; a failed write's error is raised on the training thread at the next save or at one of those
    points. ``background=False`` writes on the training thread.
    """

    def __init__(self, background: bool = True) -> None:
        """``background``: write checkpoints on a background thread (the class docstring)."""
        super().__init__()
        self.background = background
        self._writes = OrderedBackgroundWrites("checkpoint-writes")

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
        target = os.fspath(path)
        if "://" in target and not target.startswith("file://"):
            self.wait()
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files")
        target = target.removeprefix("file://")
        state = checkpoint
        if self.background:
            self.wait()  # one copy in memory at most: a save first lets the previous write finish
            state = host_snapshot(checkpoint)
        self._in_order(atomic_write, target, functools.partial(self.serialize, state))

    def serialize(self, checkpoint: dict[str, Any], path: str) -> None:
        """Write ``checkpoint`` into the (temporary) file ``path``."""
        torch.save(checkpoint, path)

    def link_checkpoint(self, source: str, path: str) -> None:
        """Make ``path`` a second name of the checkpoint ``source``, after the writes queued before it."""
        self._in_order(atomic_link, source, path)

    def remove_checkpoint(self, path: Any) -> None:
        """Remove a checkpoint, after the writes queued before it."""
        self._in_order(super().remove_checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's load, once the queued writes have finished."""
        self.wait()
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def wait(self) -> None:
        """Block until the queued checkpoint writes have finished; raise the first one's error, if any."""
        self._writes.wait()

    def teardown(self) -> None:
        """Finish the queued writes (called by the Trainer at the end of each stage and after an error)."""
        self._writes.close()

    def _in_order(self, operation: Callable[..., Any], *args: Any) -> None:
        if self.background:
            self._writes.submit(operation, *args)
        else:
            operation(*args)


def wait_for_checkpoint_writes(trainer: Any) -> None:
    """Finish ``trainer``'s queued background checkpoint writes (a no-op for other checkpoint plugins)."""
    checkpoint_io = trainer.strategy.checkpoint_io
    if isinstance(checkpoint_io, AtomicCheckpointIO):
        checkpoint_io.wait()


def link_checkpoint(trainer: Any, source: str, path: str) -> None:
    """Make ``path`` a second name of the checkpoint ``source`` that ``trainer`` saved (in order with its writes)."""
    checkpoint_io = trainer.strategy.checkpoint_io
    if isinstance(checkpoint_io, AtomicCheckpointIO):
        checkpoint_io.link_checkpoint(source, path)
    else:
        atomic_link(source, path)
