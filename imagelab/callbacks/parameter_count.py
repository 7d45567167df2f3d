"""Parameter counts of a run's model: total, trainable and the trainable share, logged when fitting starts."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from imagelab.tracking.console import say
from imagelab.tracking.wandb_run import wandb_loggers


def count_parameters(module: Any) -> dict[str, float]:
    """Total and trainable parameter counts of a module and the trainable share."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {
        "model/params_total": total,
        "model/params_trainable": trainable,
        "model/params_trainable_fraction": trainable / total if total else 0.0,
    }


class ParameterCountLogger(pl.Callback):
    """Log total/trainable parameter counts and their ratio to every logger when fitting starts."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Count once the strategy has wrapped the model, so freezing done in setup() is reflected."""
        counts = count_parameters(pl_module)
        for logger in trainer.loggers:
            logger.log_hyperparams(counts)
        for logger in wandb_loggers(trainer):  # rank zero only: the W&B run's summary ranks runs by them
            logger.experiment.summary.update(counts)
        say(
            f"parameters: {counts['model/params_total']:,} total, {counts['model/params_trainable']:,} "
            f"trainable ({100 * counts['model/params_trainable_fraction']:.2f} %)"
        )
