"""Attach a run's loggers only once its data is set up, so a data error leaves no empty W&B run behind."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class AttachLoggersAfterDataSetup(pl.Callback):
    """Give the Trainer its loggers only once the data is set up, then log the run's config to them.

    Lightning starts every logger's experiment (a W&B run) before it sets up the data; a run whose data is
    missing or unreadable would leave an empty W&B run behind. The Trainer is built without loggers and
    this callback attaches them in ``setup``, which Lightning calls right after the data module's ``setup``
    (and after ``prepare_data``), so a data error ends the run before any W&B run exists. It must come first
    in the callback list, so that the other callbacks' ``setup`` sees the loggers.
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
