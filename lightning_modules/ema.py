"""Exponential moving average (EMA) of the weights, on Lightning's ``WeightAveraging`` callback.

``callbacks=... +callbacks/ema@callbacks.ema`` or simply ``callbacks.ema`` from ``conf/callbacks/ema.yaml``
(see docs/classification.md, "EMA of weights"). Lightning's callback keeps a ``torch.optim.swa_utils``
``AveragedModel`` (parameters and buffers) updated after every optimizer step, swaps the averaged weights in
for each validation epoch (so ``val/*``, the objective and the best checkpoint are the EMA model's), writes
them as the checkpoint's ``state_dict`` (the raw weights go under ``current_model_state``) and copies them into
the model when training ends. This subclass adds

* a warm-up: the decay used at update ``n`` is ``min(decay, (1 + n) / (warmup_steps + n))`` (the TensorFlow
  / timm ``ModelEmaV2`` style ramp), so an EMA of a short run is not dominated by its random start;
* a record in every checkpoint (``checkpoint["weights"] = "ema"`` and ``checkpoint["ema"]``), so that the
  scripts and the reader know which weights they score;
* test/predict on a checkpoint keep its EMA ``state_dict`` (Lightning's hook would reload the raw weights
  over them whenever the callback is present, also outside fitting).

Every process updates its own copy from the same (all-reduced) weights, so the average is identical on every
DDP rank and needs no communication.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from imagelab.callbacks.final_network import build_module_from_data
from imagelab.core.errors import UserError
from imagelab.core.plain_config import check_int

WEIGHTS_KEY = "weights"
"""Checkpoint key that says which weights ``state_dict`` holds: ``"ema"`` when written with this callback."""


def ema_decay(decay: float, warmup_steps: int, num_averaged: Tensor) -> Tensor:
    """The decay of the update that follows ``num_averaged`` updates (a tensor: no host sync on GPUs)."""
    if warmup_steps <= 0:
        return torch.full_like(num_averaged, decay, dtype=torch.float32)
    n = num_averaged.float()
    return torch.clamp((1.0 + n) / (float(warmup_steps) + n), max=decay)


class EMA(WeightAveraging):
    """EMA of the model's parameters and buffers; validation, best checkpoint and final model use it.

    Args:
        decay: EMA decay per optimizer step (0.999: an average over roughly the last 1,000 steps).
        warmup_steps: ramp of the decay ``min(decay, (1 + n) / (warmup_steps + n))`` after ``n`` updates;
            0 = constant decay from the first update (the EMA then starts as a copy of the first weights).
        start_step: first optimizer step (0-based) to average from; earlier steps are skipped.
        every_n_steps: update the average every this many optimizer steps.
        device: where the averaged copy lives (null = with the model; ``cpu`` saves accelerator memory).
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup_steps: int = 10,
        start_step: int = 0,
        every_n_steps: int = 1,
        device: str | None = None,
    ) -> None:
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise UserError(f"callbacks.ema.decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup_steps = check_int("callbacks.ema.warmup_steps", warmup_steps, 0)
        self.start_step = check_int("callbacks.ema.start_step", start_step, 0)
        self.every_n_steps = check_int("callbacks.ema.every_n_steps", every_n_steps, 1)
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self._average)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Copy the final network: a classifier sizes its head from the data first (``build_module_from_data``)."""
        build_module_from_data(pl_module, stage)
        super().setup(trainer, pl_module, stage)

    def _average(self, ema: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        """``ema <- d * ema + (1 - d) * current`` for one device/dtype group (integer buffers are copied)."""
        if not ema:
            return
        if not (torch.is_floating_point(ema[0]) or torch.is_complex(ema[0])):
            for e, c in zip(ema, current, strict=True):
                e.copy_(c)
            return
        d = ema_decay(self.decay, self.warmup_steps, num_averaged).to(ema[0].device, ema[0].dtype)
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, torch._foreach_mul(current, 1.0 - d))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every ``every_n_steps``-th optimizer step from ``start_step`` on (never per epoch)."""
        return (
            step_idx is not None
            and step_idx >= self.start_step
            and (step_idx - self.start_step) % self.every_n_steps == 0
        )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Write the EMA weights as ``state_dict`` (Lightning) and say so in the checkpoint."""
        raw = checkpoint["state_dict"]
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is not None:
            # entries that are neither parameters nor buffers (metric states such as val/acc_best) are not
            # averaged: keep their current values rather than the copy's stale ones
            averaged = {n for n, _ in pl_module.named_parameters()} | {
                n for n, _ in pl_module.named_buffers()
            }
            for name, value in raw.items():
                if name not in averaged:
                    checkpoint["state_dict"][name] = value
            checkpoint[WEIGHTS_KEY] = "ema"
            checkpoint["ema"] = {
                "decay": self.decay,
                "warmup_steps": self.warmup_steps,
                "start_step": self.start_step,
                "every_n_steps": self.every_n_steps,
                "updates": int(self._average_model.n_averaged.item()),
            }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Resuming a fit restores both models; testing/predicting keeps the EMA ``state_dict`` as loaded."""
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
