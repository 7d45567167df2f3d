"""Scale the learning rates with the global batch when fitting starts (config ``lr_scaling``, off by default).

See docs/scaling.md; the rules and the factor are :mod:`imagelab.core.distributed`'s.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from imagelab.core.distributed import LR_SCALING_RULES, lr_scale_factor
from imagelab.core.errors import UserError
from imagelab.core.plain_config import check_int

log = logging.getLogger(__name__)
log_info = rank_zero_only(log.info)  # log.info in the rank-zero process only


class LRScaling(pl.Callback):
    """Scale every optimizer's learning rate with the global batch when fitting starts (off by default).

    global batch = per-device batch (``datamodule.batch_size``) x devices x nodes x accumulate_grad_batches;
    ``base_batch_size`` is the global batch the configured LR was tuned for (None = one device without
    accumulation, i.e. ``datamodule.batch_size``). ``rule``: none (x1), linear (x k) or sqrt (x sqrt(k)) with
    k = global / base batch. Applied once, on ``on_fit_start``, to each param group's ``lr`` / ``initial_lr``
    and to the schedulers' ``base_lrs``; a resumed run then gets the saved (already scaled) optimizer and
    scheduler state from its checkpoint, restored by Lightning after this hook.
    """

    def __init__(self, rule: str = "none", base_batch_size: int | None = None) -> None:
        super().__init__()
        if rule not in LR_SCALING_RULES:
            raise UserError(f"unknown lr_scaling.rule {rule!r}; valid rules: {', '.join(LR_SCALING_RULES)}")
        check_int("lr_scaling.base_batch_size", base_batch_size, 1, allow_none=True)
        self.rule = rule
        self.base_batch_size = base_batch_size
        self.factor: float = 1.0
        self.global_batch: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute the factor from the run's world size and batch and multiply the learning rates."""
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if not isinstance(per_device, int):
            raise UserError(
                "lr_scaling needs a datamodule with an integer batch_size; use lr_scaling.rule=none"
            )
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        self.global_batch = per_device * int(trainer.world_size) * accumulate
        base = self.base_batch_size if self.base_batch_size is not None else per_device
        self.factor = lr_scale_factor(self.rule, self.global_batch, base)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.factor
                if "initial_lr" in group:
                    group["initial_lr"] *= self.factor
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * self.factor for lr in config.scheduler.base_lrs]
        log_info(
            "lr_scaling %s: global batch %d (base %d): learning rates x %.4g",
            self.rule,
            self.global_batch,
            base,
            self.factor,
        )
        for logger in trainer.loggers:
            logger.log_hyperparams({"lr_scaling/factor": self.factor, "lr_scaling/batch": self.global_batch})
