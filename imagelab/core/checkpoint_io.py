"""Checkpoint files that are either complete or absent, whatever kills the process while one is written."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from imagelab.core.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with a local write that cannot leave a truncated ``.ckpt`` behind.

    Lightning's own save goes through fsspec, whose local "transaction" writes to a temp file in ``$TMPDIR``
    and moves it into place: when ``$TMPDIR`` is another file system (tmpfs ``/tmp``, a network home) that
    move is a copy, so ``kill -9`` or a full disk leaves a truncated checkpoint beside good ones and a
    full-size leftover in ``$TMPDIR``. Here the checkpoint is written to a temp file in its own folder, flushed
    with ``fsync`` and renamed over the target (:func:`imagelab.core.atomic.atomic_write`). Remote paths
    (``s3://`` ...) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
        target = os.fspath(path)
        if "://" in target and not target.startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files")
        target = target.removeprefix("file://")
        atomic_write(target, lambda tmp: torch.save(checkpoint, tmp))
