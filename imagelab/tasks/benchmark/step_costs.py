"""Where the framework's per-step time goes: process CPU time per training step of each part around a step.

``StepCostMeter`` (a callback; the benchmark adds it to one extra run of each near-zero-compute row) wraps,
for steps ``warmup`` .. ``warmup + steps``, the per-step hooks of every other callback, Lightning's callback
dispatch (``lightning.pytorch.trainer.call._call_callback_hooks``), the module's ``self.log``, hooks and
torchmetrics ``update`` calls, each
logger's ``log_metrics``, Lightning's per-step metric hand-over to the loggers and each LR scheduler's
``step``, and adds up the process CPU time spent in each, exclusive of the other wrapped parts it calls (a
logger's write is not counted again in the hook that makes it). ``rows`` then lists, most expensive first,
each part's calls and CPU ms per step. The wrappers cost about a microsecond per call; "dispatch" is
Lightning's loop over the callbacks (a hook lookup, a profiler context per callback and hook) without the
hooks' own time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer import call
from torchmetrics import Metric

from imagelab.callbacks.step_hooks import STEP_HOOKS


class StepCostMeter(pl.Callback):
    """CPU ms per training step of each callback, logging call, logger and the LR scheduler (module docstring)."""

    def __init__(self, warmup: int = 20, steps: int = 500) -> None:
        self.warmup, self.steps = int(warmup), int(steps)
        self.count = 0
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: list[dict[str, Any]] = []
        self._undo: list[tuple[Any, str, Any, bool]] = []
        self._active = False
        self._inner: list[float] = []  # CPU time of wrapped calls inside the running ones (exclusive times)

    def _timed(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` adding its own CPU time (minus that of wrapped calls inside it) to ``key``."""
        cpu_s, calls, clock, inner = self.cpu_s, self.calls, time.process_time, self._inner

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self._active:
                return fn(*args, **kwargs)
            inner.append(0.0)
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = clock() - start
                cpu_s[key] += spent - inner.pop()
                calls[key] += 1
                if inner:
                    inner[-1] += spent

        return wrapper

    def _wrap(self, owner: Any, name: str, key: str) -> None:
        had_own = name in vars(owner) if not isinstance(owner, type) else True
        original = getattr(owner, name)
        self._undo.append((owner, name, vars(owner).get(name) if had_own else None, had_own))
        setattr(owner, name, self._timed(key, original))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wrap every part (active only inside the measured steps)."""
        for cb in trainer.callbacks:
            for hook in STEP_HOOKS:
                if cb is not self and getattr(type(cb), hook) is not getattr(pl.Callback, hook):
                    self._wrap(cb, hook, f"callback {type(cb).__name__}")
        for hook in STEP_HOOKS:
            if getattr(type(pl_module), hook, None) is not getattr(pl.LightningModule, hook, None):
                self._wrap(pl_module, hook, f"module {hook}")
        self._wrap(pl_module, "log", "module self.log")
        for name, sub in pl_module.named_modules():
            if isinstance(sub, Metric):
                self._wrap(sub, "update", f"module {name}.update (torchmetrics)")
        for logger in trainer.loggers:
            self._wrap(logger, "log_metrics", f"logger {type(logger).__name__}.log_metrics")
        for config in trainer.lr_scheduler_configs:
            self._wrap(config.scheduler, "step", "LR scheduler step")
        connector = trainer._logger_connector
        self._wrap(connector, "update_train_step_metrics", "Lightning: step metrics to the loggers")
        self._wrap(call, "_call_callback_hooks", "dispatch")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Switch the wrappers on for the measured steps (from the start of step ``warmup``)."""
        self._active = self.warmup <= self.count < self.warmup + self.steps
        if self.count == self.warmup + self.steps:
            self._finish(trainer)
        self.count += 1

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Unwrap everything if the epoch ended before the last measured step (before any checkpoint)."""
        self._finish(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Unwrap everything (a run without validation)."""
        self._finish(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Unwrap everything."""
        self._finish(trainer)

    def _finish(self, trainer: pl.Trainer) -> None:
        """Summarise the measured steps and unwrap (before a checkpoint pickles a wrapped scheduler)."""
        self._active = False
        if not self.rows and self.count > self.warmup:
            self._summarise(len(trainer.callbacks))
        for owner, name, own, had_own in reversed(self._undo):
            if had_own and own is not None:
                setattr(owner, name, own)
            else:
                delattr(owner, name)
        self._undo.clear()

    def _summarise(self, n_callbacks: int) -> None:
        steps = max(1, min(self.count - self.warmup, self.steps))
        costs = dict(self.cpu_s)
        rows = [
            {
                "part": f"Lightning's dispatch over {n_callbacks} callbacks" if key == "dispatch" else key,
                "calls_per_step": self.calls[key] / steps,
                "cpu_ms_per_step": 1000.0 * value / steps,
            }
            for key, value in costs.items()
        ]
        self.rows = sorted(rows, key=lambda r: -r["cpu_ms_per_step"])
