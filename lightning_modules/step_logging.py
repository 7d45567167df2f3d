"""Per-step training metrics at the cost of a few tensor operations per step (docs/scaling.md, issue 13).

Each ``self.log`` call costs Lightning 0.6-0.8 ms of CPU time (docs/scaling.md; its result collection moves
the stored metric's state to the value's device with ``apply_to_collection`` on every call), while the
loggers only receive step values every ``trainer.log_every_n_steps`` steps. So the modules:

* call ``self.log`` for step values only on the steps whose values can reach a logger or the progress bar
  (``should_log_step``): the logging steps, the last batch of an epoch, the last step of a ``max_steps`` run
  and every step under ``fast_dev_run``; what the loggers receive is unchanged;
* accumulate epoch values every step in torchmetrics objects on the device (``epoch_mean``, and metrics built
  with ``validate_args=False``), with ``update`` only (no per-step ``compute``, no host sync), and log them
  once in ``on_train_epoch_end`` (torchmetrics syncs them across processes).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import MeanMetric


def should_log_step(module: Any, batch_idx: int) -> bool:
    """Whether this training step's step metrics should be logged (see the module docstring).

    True outside a Trainer. Uses the trainer's ``_logger_connector.should_update_logs``, the test Lightning's
    own ``LearningRateMonitor`` applies before logging, so the written steps stay exactly Lightning's.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return True
    if trainer.fast_dev_run or trainer._logger_connector.should_update_logs:
        return True
    if batch_idx + 1 >= trainer.num_training_batches:  # the last batch: callback_metrics hold its loss
        return True
    return 0 < trainer.max_steps <= trainer.global_step + 1


def epoch_mean() -> MeanMetric:
    """A mean of per-step training values without the NaN check (``if nans.any()``: a host sync per update).

    Update it with ``update_epoch_mean``: torchmetrics 1.9 ignores ``weight`` when ``nan_strategy="disable"``.
    """
    return MeanMetric(nan_strategy="disable")


def update_epoch_mean(metric: MeanMetric, value: Tensor, weight: int) -> None:
    """Add a scalar ``value`` with weight ``weight`` (e.g. the batch's image count) to an ``epoch_mean``.

    The value is passed as ``weight`` copies (an expanded view, nothing copied): the weighted mean Lightning's
    ``self.log(on_epoch=True, batch_size=n)`` computes, also where torchmetrics drops the ``weight`` argument.
    """
    metric.update(value.detach().reshape(1).expand(int(weight)))
