"""Fail a run whose training loss becomes NaN/inf, naming the step, and never checkpoint non-finite weights.

Each step's loss is kept on the device (a reference, nothing computed); the losses are checked together and
read on the host once per check point of ``imagelab.callbacks.check_points`` (every ``check_every_n_steps``
training batches, the last batch of an epoch, the last step of a ``max_steps`` run), where the processes of a
DDP run also agree (one collective). So a NaN is reported within ``check_every_n_steps`` training batches,
always before the epoch's validation and checkpoints, and the message names the step whose loss it was.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics import Metric

from imagelab.callbacks.check_points import (
    DEFAULT_EVERY,
    any_rank,
    check_interval,
    is_check_batch,
    position,
)
from imagelab.core.errors import TrainingDiverged

log = logging.getLogger(__name__)


def _non_finite_weight(module: torch.nn.Module) -> str | None:
    """The name of a parameter or buffer of ``module`` holding NaN/inf (metric states such as a best-so-far
    of -inf are not weights and are skipped), else None."""
    metrics = [name for name, sub in module.named_modules() if isinstance(sub, Metric) and name]
    weights = [
        (name, value.detach())
        for name, value in [*module.named_parameters(), *module.named_buffers()]
        if value.is_floating_point() and not any(name.startswith(prefix + ".") for prefix in metrics)
    ]
    if not weights:
        return None
    # one read: a finite sum of a tensor proves all its elements finite (a NaN or inf makes any sum NaN or inf);
    # only where a sum is not finite (a non-finite element, or float32 overflow) is each tensor looked at
    sums = torch.stack(
        [
            value.sum(dtype=torch.float64 if value.dtype == torch.float64 else torch.float32)
            for _, value in weights
        ]
    )
    if bool(torch.isfinite(sums).all()):
        return None
    return next((name for name, value in weights if not torch.isfinite(value).all()), None)


def finite_flags(losses: list[torch.Tensor]) -> torch.Tensor:
    """One boolean per loss (on the losses' device): True where every element is finite. Nothing is read."""
    if all(loss.dim() == 0 for loss in losses) and len({loss.dtype for loss in losses}) == 1:
        return torch.isfinite(torch.stack(losses))
    return torch.stack([torch.isfinite(loss).all() for loss in losses])


class NonFiniteLossGuard(pl.Callback):
    """Stop a run at the check point after a training loss became NaN/inf, and never checkpoint such weights.

    ``action: error`` (default) fails the run with one line naming the step, epoch and loss (status ``failed``,
    exit code 3; an Optuna trial is recorded FAILED and the search goes on); ``action: warn`` logs it and goes
    on (e.g. for mixed-precision runs whose scaler skips such steps). ``check_every_n_steps``: training
    batches between two reads of the recorded losses (and, under DDP, agreements of the processes); every
    step's loss is checked, the failure comes at most that many batches later.
    """

    def __init__(self, action: str = "error", check_every_n_steps: int = DEFAULT_EVERY) -> None:
        if action not in ("error", "warn"):
            raise ValueError(f"action must be error or warn, got {action!r}")
        self.action = action
        self.every = check_interval(check_every_n_steps, "check_every_n_steps")
        self._losses: list[torch.Tensor] = []
        self._where: list[tuple[int, int, int]] = []  # (global step, epoch, batch) of each recorded loss

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Record the step's loss; check the recorded ones at a check point."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
            self._where.append((trainer.global_step, trainer.current_epoch, batch_idx))
        if is_check_batch(trainer, batch_idx, self.every):
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check what the epoch's last check point has not seen (e.g. an epoch cut short)."""
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        """Read the recorded losses (one host read), agree across processes (one collective); fail or warn."""
        losses, where = self._losses, self._where
        self._losses, self._where = [], []
        if not losses:  # the same on every rank: the same batches were recorded
            return
        flags = finite_flags(losses)
        if not any_rank(trainer, not bool(flags.all())):
            return
        bad = (~flags).nonzero().flatten().tolist()  # the failure path only
        if bad:
            step, epoch, batch_idx = where[bad[0]]
            loss = losses[bad[0]]
            value = float(loss.float().mean()) if loss.numel() else math.nan
            message = (
                f"the training loss became {value} at step {step} (epoch {epoch}, batch {batch_idx})"
                + (
                    f" and at {len(bad) - 1} later step(s) up to step {where[bad[-1]][0]}"
                    if len(bad) > 1
                    else ""
                )
            )
        else:
            message = f"the training loss of another process became NaN/inf by step {trainer.global_step}"
        message += (
            ": lower model.optimizer.lr, clip gradients (trainer.gradient_clip_val=1.0) or check the data"
        )
        if self.action == "error":
            raise TrainingDiverged(message)
        log.warning("%s; going on (callbacks.nonfinite_guard.action=warn)", message)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Refuse to write weights that are NaN/inf (they would look like a usable best/last checkpoint)."""
        if (
            trainer.world_size == 1
        ):  # a loss recorded since the last check point names the step (no collective)
            self._check(trainer)
        name = _non_finite_weight(pl_module)
        if name is not None:
            raise TrainingDiverged(
                f"weight {name} is not finite {position(trainer)}: no checkpoint written; lower "
                "model.optimizer.lr or clip gradients (trainer.gradient_clip_val=1.0)"
            )
