"""The run's resolved config inside every checkpoint, so a checkpoint alone rebuilds its data and model."""

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
