"""Per-step training metrics at the cost of a few tensor operations per step (docs/scaling.md, issue 13).

Each ``self.log`` call costs Lightning 0.6-0.8 ms of CPU time (docs/scaling.md; its result collection moves
the stored metric's state to the value's device with ``apply_to_collection`` on every call), while the
loggers only receive step values every ``trainer.log_every_n_steps`` steps. So the modules:

* call ``self.log`` for step values only on the steps whose values can reach a logger or the progress bar
  (``should_log_step``): the logging steps, the last batch of an epoch, the last step of a ``max_steps`` run
  and every step under ``fast_dev_run``; what the loggers receive is unchanged;
* accumulate epoch values every step on the device with plain tensor operations (``DeviceSum``: two or
  three small ops per step, against 0.07-0.16 ms of CPU for a torchmetrics ``update``), hand the sums to
  torchmetrics objects (``epoch_mean``) once per epoch and log them in ``on_train_epoch_end`` (torchmetrics
  syncs them across processes); nothing is read on the host per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric


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


def log_epoch_loss(module: Any, name: str, metric: Metric) -> None:
    """Log the epoch value of ``metric`` (synchronised across processes by torchmetrics) and reset it.

    The value ``module.log(name, metric, on_epoch=True)`` logs, without that call's lookup of the module's
    metric attributes: its first ``isinstance(sub_module, Metric)`` per module class walks every torchmetrics
    class (about 0.3 s of CPU for a ResNet-18, once per process).
    """
    module.log(name, metric.compute())
    metric.reset()


class DeviceSum:
    """A running sum of per-step values and of their weights, kept on the values' device (no host read).

    ``add(value_sum, weight)`` costs one tensor addition; ``flush_into(metric)`` adds the weighted mean of
    what was summed to an ``epoch_mean`` metric (as ``weight`` copies, so the metric's mean across processes
    is weighted by images) and starts again.
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.weight = 0

    def add(self, value_sum: Tensor, weight: int) -> None:
        """Add ``value_sum`` (the sum of ``weight`` values, e.g. loss x batch size, or correct predictions)."""
        value_sum = value_sum.detach()
        self.total = value_sum if self.total is None else self.total + value_sum
        self.weight += int(weight)

    def flush_into(self, metric: MeanMetric) -> bool:
        """Update ``metric`` with the mean so far (weight = the summed weights); False when nothing was added."""
        if self.total is None or not self.weight:
            return False
        update_epoch_mean(metric, self.total.to(torch.float32) / self.weight, self.weight)
        self.total, self.weight = None, 0
        return True
