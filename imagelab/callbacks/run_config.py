"""Callbacks every run gets: the run's config inside each checkpoint, and parameter counts in the logs."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from imagelab.core.constants import RUN_CONFIG_KEY


class RunConfigInCheckpoint(pl.Callback):
    """Store the run's resolved config (plain Python types) in every checkpoint under ``run_config``.

    This lets ``scripts/eval.py`` and the inference scripts rebuild data and model from the checkpoint alone,
    and keeps the checkpoint loadable with ``torch.load(weights_only=True)``. This callback is the only writer
    of that key: model config values a module learnt from the data (``config_from_data()``, e.g. the
    classifier's classes and preprocessing) are merged into its ``model`` node here.
    """

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Add the config (with the model's ``config_from_data()``, when it has one) to the checkpoint."""
        run_config = self.run_config
        learnt = getattr(pl_module, "config_from_data", None)
        if callable(learnt) and isinstance(run_config.get("model"), dict):
            run_config = {**run_config, "model": {**run_config["model"], **learnt()}}
        checkpoint[RUN_CONFIG_KEY] = run_config


def build_module_from_data(pl_module: pl.LightningModule, stage: str) -> None:
    """Let a module that builds its network from the data in ``setup`` do so now (idempotent).

    Lightning sets up the datamodule, then the callbacks, then the LightningModule: a callback that changes or
    checks the network in its own ``setup`` (channels-last, compile, distillation) calls this first, so that
    it sees the final network (``ClassifierModule.build_from_data`` sizes the head from the data's classes).
    Modules without ``build_from_data`` are complete at construction.
    """
    build = getattr(pl_module, "build_from_data", None)
    if callable(build):
        build(stage)


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
            if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
                logger.experiment.summary.update(counts)
        if trainer.is_global_zero:
            print(
                f"parameters: {counts['model/params_total']:,} total, {counts['model/params_trainable']:,} "
                f"trainable ({100 * counts['model/params_trainable_fraction']:.2f} %)"
            )


class AttachLoggersAfterDataSetup(pl.Callback):
    """Give the Trainer its loggers only once the data is set up, then log the run's config to them.

    Lightning starts every logger's experiment (a W&B run) before it sets up the data; a run whose data is
    missing or unreadable would leave an empty W&B run behind. The Trainer is built without loggers and
    this callback attaches them in ``setup``, which Lightning calls right after the data module's ``setup``
    (and after ``prepare_data``), so a data error ends the run before any W&B run exists.
    """

    def __init__(self, loggers: list[Any], hyperparameters: dict[str, Any]) -> None:
        self.loggers = loggers
        self.hyperparameters = hyperparameters
        self._logged = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Attach the loggers (first stage only) and log the config once."""
        if not self.loggers or trainer.loggers:
            return
        trainer.loggers = self.loggers
        if not self._logged:
            for logger in self.loggers:
                logger.log_hyperparams(self.hyperparameters)
            self._logged = True
