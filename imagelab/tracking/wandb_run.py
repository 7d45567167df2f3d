"""What a W&B run holds besides the logged curves: ranking summaries, axes, a clean config, the run's files.

* :class:`WandbRunSetup` (a callback, ``conf/callbacks/wandb_run.yaml``) declares with ``define_metric`` which
  summary each metric keeps (best ``val/psnr``/``val/acc`` = max, ``val/loss`` = min, plus the run's objective
  and mode), so the runs table ranks runs by their best value; ``val/*`` and ``test/*`` are plotted against
  ``epoch``, everything else against ``trainer/global_step``. It also stops Lightning from logging the
  module's hyper-parameters as extra top-level config keys (they are already under ``model`` in the run
  config that the train task logs).
* ``wandb_files.loggable_config`` drops unfilled ``None`` values from that run config.
* ``wandb_files.attach_run_files`` copies ``metrics.json`` and the resolved config into the active W&B run.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

# Summaries that rank runs in the W&B runs table: (metric, aggregations). The objective is added at run time.
DEFAULT_SUMMARIES: dict[str, str] = {
    "val/psnr": "max,last",
    "val/ssim": "max,last",
    "val/acc": "max,last",
    "val/f1_macro": "max,last",
    "val/loss": "min,last",
    "train/loss_epoch": "min,last",
}
EPOCH_AXIS_PREFIXES = ("val/", "test/", "train/loss_epoch", "train/acc")


def wandb_loggers(trainer: Any) -> list[Any]:
    """The trainer's ``WandbLogger`` objects (none on ranks other than zero)."""
    if not getattr(trainer, "is_global_zero", True):
        return []
    return [lg for lg in getattr(trainer, "loggers", []) if type(lg).__name__ == "WandbLogger"]


def define_summaries(run: Any, summaries: dict[str, str], objective: tuple[str, str] | None = None) -> None:
    """``define_metric`` for every entry of ``summaries`` and for the objective (max or min by its mode).

    Metrics whose name starts with one of :data:`EPOCH_AXIS_PREFIXES` get ``epoch`` as their x axis (Lightning
    adds ``epoch`` to every row it logs); the others keep ``trainer/global_step``.
    """
    summaries = dict(summaries)
    if objective is not None and objective[0]:
        metric, mode = objective
        summaries[metric] = f"{'max' if mode == 'max' else 'min'},last"
    run.define_metric("epoch", hidden=True)
    for prefix in ("val/", "test/"):
        run.define_metric(f"{prefix}*", step_metric="epoch", step_sync=True)
    for name, ops in summaries.items():
        axis = "epoch" if name.startswith(EPOCH_AXIS_PREFIXES) else "trainer/global_step"
        run.define_metric(name, step_metric=axis, step_sync=True, summary=ops)


class WandbRunSetup(pl.Callback):
    """Declare the W&B summaries and axes of the run, and keep the logged config free of duplicates.

    ``summaries`` maps metric names to W&B summary aggregations (``"max,last"``, ``"min"``...); the
    monitored objective (``objective.metric`` / ``objective.mode``) is added to it.
    """

    def __init__(
        self,
        summaries: dict[str, str] | None = None,
        objective_metric: str | None = None,
        objective_mode: str | None = None,
    ) -> None:
        self.summaries = dict(DEFAULT_SUMMARIES if summaries is None else summaries)
        self.objective_metric = objective_metric
        self.objective_mode = objective_mode
        self._defined: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep Lightning from logging the module's and datamodule's hyper-parameters again as top-level
        config keys (the run config logged by the task has them under ``model`` and ``data``)."""
        pl_module._log_hyperparams = False
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            datamodule._log_hyperparams = False

    def _define(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        objective = None
        metric, mode = self.objective_metric, self.objective_mode
        if metric in (None, "auto") or mode in (None, "auto"):
            default = getattr(pl_module, "default_objective", None)
            if default is not None:
                metric = default[0] if metric in (None, "auto") else metric
                mode = default[1] if mode in (None, "auto") else mode
        if metric and mode:
            objective = (str(metric), str(mode))
        for logger in wandb_loggers(trainer):
            run = logger.experiment
            if id(run) in self._defined or not hasattr(run, "define_metric"):
                continue
            define_summaries(run, self.summaries, objective)
            self._defined.add(id(run))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Declare summaries and axes before the first metric is logged."""
        self._define(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Same for test-only runs (``scripts/eval.py``)."""
        self._define(trainer, pl_module)
