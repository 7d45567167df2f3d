"""Callbacks that keep a run's record honest: stop cleanly on a signal, stop at the step the loss diverges."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics import Metric

from imagelab.core.errors import RunInterrupted, TrainingDiverged
from imagelab.core.signals import STATE

log = logging.getLogger(__name__)


def _position(trainer: pl.Trainer) -> str:
    return f"at epoch {trainer.current_epoch}, step {trainer.global_step}"


def _any_rank(trainer: pl.Trainer, flag: bool) -> bool:
    """``flag`` of any rank under DDP (every rank then acts at the same batch), else ``flag``."""
    if trainer.world_size > 1:
        return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
    return flag


class GracefulInterrupt(pl.Callback):
    """Turn a recorded SIGTERM/SIGINT into :class:`RunInterrupted` at a batch boundary and save ``last.ckpt``."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """From now on a signal waits for the end of the current batch."""
        STATE.trainer = trainer

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Outside the Trainer a signal interrupts at once again."""
        STATE.trainer = None

    def _check(self, trainer: pl.Trainer) -> None:
        if _any_rank(trainer, STATE.signum is not None):
            raise RunInterrupted(STATE.signum or signal.SIGTERM, _position(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Stop after a training step when a signal arrived (every rank has as many training batches)."""
        STATE.trained_steps += 1
        self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Stop after a validation batch when a signal arrived (one process only: under DDP the ranks score
        different numbers of images, so a per-batch agreement would deadlock; they stop at the next step)."""
        if trainer.world_size == 1:
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
        STATE.saved_checkpoint = path
        log.info("saved %s after the interruption (%s)", path, _position(trainer))


def _non_finite_weight(module: torch.nn.Module) -> str | None:
    """The name of a parameter or buffer of ``module`` holding NaN/inf (metric states such as a best-so-far
    of -inf are not weights and are skipped), else None."""
    metrics = [name for name, sub in module.named_modules() if isinstance(sub, Metric) and name]
    for name, value in [*module.named_parameters(), *module.named_buffers()]:
        if any(name.startswith(prefix + ".") for prefix in metrics):
            continue
        if value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


class NonFiniteLossGuard(pl.Callback):
    """Stop a run at the training step whose loss is NaN/inf, and never write a checkpoint with such weights.

    ``action: error`` (default) fails the run with one line naming the step, epoch and loss (status ``failed``,
    exit code 3; an Optuna trial is recorded FAILED and the search goes on); ``action: warn`` logs it and goes
    on (e.g. for mixed-precision runs whose scaler skips such steps). ``check_every_n_steps`` > 1 checks less
    often (each check syncs the loss to the host on a GPU).
    """

    def __init__(self, action: str = "error", check_every_n_steps: int = 1) -> None:
        if action not in ("error", "warn"):
            raise ValueError(f"action must be error or warn, got {action!r}")
        if int(check_every_n_steps) < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.action = action
        self.every = int(check_every_n_steps)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Check the step's loss; fail (or warn) when it is not finite."""
        if trainer.global_step % self.every:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = _any_rank(trainer, not bool(torch.isfinite(loss.detach()).all()))
        if not bad:
            return
        value = float(loss.detach().float().mean()) if loss.numel() else math.nan
        message = (
            f"the training loss became {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {batch_idx}): lower model.optimizer.lr, clip gradients (trainer.gradient_clip_val=1.0) or "
            "check the data"
        )
        if self.action == "error":
            raise TrainingDiverged(message)
        log.warning("%s; going on (callbacks.nonfinite_guard.action=warn)", message)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Refuse to write weights that are NaN/inf (they would look like a usable best/last checkpoint)."""
        name = _non_finite_weight(pl_module)
        if name is not None:
            raise TrainingDiverged(
                f"weight {name} is not finite {_position(trainer)}: no checkpoint written; lower "
                "model.optimizer.lr or clip gradients (trainer.gradient_clip_val=1.0)"
            )
