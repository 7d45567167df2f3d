"""Lightning's ``ModelCheckpoint`` with a ``last.ckpt`` of every epoch, written once when ``best.ckpt`` has it too.

Since Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only in a round that also saved a top-k file, so
with ``save_top_k=1`` it is the best epoch, not the last one, and a run resumed after a crash would repeat
every epoch since its last improvement. Here ``last.ckpt`` is saved at every checkpointing round again (each
validation, or each training epoch's end where Lightning saves there), as it was before 2.6.

In a round that improves, ``last.ckpt`` is saved right after the top-k checkpoint of the same step: two
serialisations, two writes and two fsyncs of the same state. For a
ResNet-18 with AdamW that is 134 MB and about 0.2 s of CPU more per improving epoch, plus the disk's time
(docs/scaling.md, "Against timm's own train.py"). Here ``last.ckpt`` then becomes a hard link to the file
just written (renamed into place, :func:`imagelab.core.atomic.atomic_link`; a copy where the file system
has no hard links), on global rank zero, with a barrier after it like Lightning's own save. With checkpoints
written in the background (:class:`imagelab.core.checkpoint_io.AtomicCheckpointIO`) the link is queued behind
that write.

The link is used only where the two files would hold the same state: the top-k file was
written in the same round (the same hook call, so no training happened in between), to a local path, and
``last_model_path`` was already ``last.ckpt`` before this round, so that the callback's state saved in the
top-k file names the same last path. Before a run's first save that path is empty; it is set to the
``last.ckpt`` about to be written (unless such a file exists already), so the top-k file holds what Lightning
would write into ``last.ckpt``. Both files are replaced by renaming, never changed in place, so a later save
of either leaves the other intact.
"""

from __future__ import annotations

from typing import Any
from weakref import proxy

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

from imagelab.core.checkpoint_io import link_checkpoint


class ModelCheckpoint(_LightningModelCheckpoint):
    """``lightning.pytorch.callbacks.ModelCheckpoint`` that links ``last.ckpt`` to a top-k file of the same
    round instead of writing the state twice (module docstring); every argument is Lightning's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's arguments, unchanged."""
        super().__init__(*args, **kwargs)
        self._in_topk = False
        self._written_this_round: str | None = None  # the file the current hook call's top-k save wrote
        self._last_before_round: str | None = None  # last_model_path before _save_last_checkpoint set it

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's save at the end of validation, then ``last.ckpt`` if that round did not write it."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's save at the end of a training epoch, then ``last.ckpt`` if that round did not write it."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: pl.Trainer) -> None:
        """Save ``last.ckpt`` when this step has no checkpoint yet (the metric did not improve)."""
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """Lightning's top-k save; remembers the file it wrote, if any, for the ``last.ckpt`` that follows."""
        self._written_this_round = None
        if self.save_last is True and not self.last_model_path:
            # the first save of a run: the top-k file's state names the last.ckpt written right after it (as
            # that last.ckpt's own state does), so that one can be a link too and a run resumed from it
            # finds its last.ckpt under the same name
            planned = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
            if not self.file_exists(planned, trainer):
                self.last_model_path = planned
        self._in_topk = True
        try:
            super()._save_topk_checkpoint(trainer, monitor_candidates)
        finally:
            self._in_topk = False

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """Lightning's ``last.ckpt`` save, which ends the round (see ``_save_checkpoint``)."""
        self._last_before_round = self.last_model_path
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._written_this_round = None
            self._last_before_round = None

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Write ``filepath``, or link it to this round's top-k file when that holds the same state."""
        source = self._written_this_round
        if (
            self._in_topk
            or source is None
            or self.save_last is not True
            or filepath != self.last_model_path
            or filepath != self._last_before_round
            or source == filepath
            or self._last_global_step_saved != trainer.global_step
            or "://" in filepath + source
        ):
            super()._save_checkpoint(trainer, filepath)
            if self._in_topk:
                self._written_this_round = filepath
            return
        if trainer.is_global_zero:
            link_checkpoint(trainer, source, filepath)  # after the queued write of source
        trainer.strategy.barrier("ModelCheckpoint.link_last")
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
