"""Lightning callback that stops hopeless Optuna trials early (conf/callbacks/optuna_pruning.yaml)."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import optuna

from imagelab.sweeps.optuna_search import find_running_trial

log = logging.getLogger(__name__)


class OptunaPruning(pl.Callback):
    """Report ``monitor`` to the job's running Optuna trial after each validation; stop the job when pruned.

    The trial is found through the sweeper's study storage
    (:func:`imagelab.sweeps.optuna_search.find_running_trial`), so this works in the sweeper's process and in
    launcher processes alike. The step reported is the epoch. A pruned job stops like early stopping does: it
    still tests its best checkpoint and returns its best value, which the sweeper records as the trial's
    (COMPLETE) value; ``optuna/pruned_at_epoch`` in the job's metrics.json and the trial's user attribute
    ``pruned_at_epoch`` say that it was cut short. Rank zero decides and broadcasts the decision, so all DDP
    ranks stop together. Outside an Optuna sweep it does nothing.
    """

    def __init__(
        self, monitor: str, percentile: float = 50.0, n_startup_trials: int = 5, n_warmup_steps: int = 2
    ) -> None:
        self.monitor = monitor
        self.percentile = percentile
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.trial: Any = None
        self.pruned_at_epoch: int | None = None
        self._reported: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Find the running trial (rank zero only) when fitting starts."""
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        pruner = optuna.pruners.PercentilePruner(
            self.percentile, n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps
        )
        self.trial = find_running_trial(pruner)
        if self.trial is not None:
            log.info("reporting %s to Optuna trial %d for pruning", self.monitor, self.trial.number)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report this epoch's value; stop training on every rank if the trial should be pruned."""
        if trainer.sanity_checking:
            return
        prune = False
        epoch = trainer.current_epoch
        if self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            value = float(value) if value is not None else math.nan
            if math.isfinite(value) and epoch not in self._reported:  # one report per epoch
                self._reported.add(epoch)
                self.trial.report(value, step=epoch)
                prune = bool(self.trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune and self.pruned_at_epoch is None:
            self.pruned_at_epoch = epoch
            trainer.should_stop = True
            if self.trial is not None:
                self.trial.set_user_attr("pruned_at_epoch", epoch)
                log.info("Optuna pruned trial %d after epoch %d: stopping", self.trial.number, epoch)

    def result_metrics(self) -> dict[str, float]:
        """What the job's metrics.json records about the trial: its number and, if pruned, the epoch."""
        if self.trial is None:
            return {}
        out = {"optuna/trial_number": float(self.trial.number)}
        if self.pruned_at_epoch is not None:
            out["optuna/pruned_at_epoch"] = float(self.pruned_at_epoch)
        return out
