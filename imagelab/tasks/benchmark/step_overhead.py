"""The framework's own cost per training step, in milliseconds (the benchmark's near-zero-compute rows).

On a GPU a step of a small model takes a few milliseconds, so the Python work Lightning and this framework do
around each step (hooks, logging, progress bar, callbacks) decides the speed. The benchmark measures it with
models that compute almost nothing (``imagelab.tasks.benchmark.plan.tiny_cases``): a 2-layer, 1-channel DnCNN on 8 px patches and a
2-channel small CNN classifier on 8 images, both on GPU-resident data (batches made by a few tensor operations),
so a step is nearly all overhead and ``framework - bare loop`` in ms/step is the framework's cost. A third run,
``lightning_alone_run``, trains the same network, loss, optimizer and data through a plain LightningModule and a
Trainer without logger, callbacks or scheduler: it splits that cost into Lightning's own loop and what this
project adds (callbacks, logging, LR schedule, W&B).

Timing: every timed step's duration (batch start to batch start) is recorded; the steps are grouped in
consecutive chunks of ``CHUNK`` steps and the median chunk mean is the robust ms/step. A chunk of 50 steps
contains the periodic work (a logger write every ``trainer.log_every_n_steps``), while the median over chunks
discards the chunks another process on a shared machine slowed down.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from imagelab.tasks.benchmark.bare import bare_parts
from imagelab.tasks.benchmark.plan import ModelCase
from imagelab.tasks.benchmark.timing import StepTimer
from lightning_modules.optim import build_optimizer

CHUNK = 50  # steps per chunk: a multiple of trainer.log_every_n_steps (10 or 50), so each holds its logging


def chunk_means_ms(durations_s: Sequence[float], chunk: int = CHUNK) -> list[float]:
    """Mean step time in ms of each complete chunk of ``chunk`` consecutive steps (a shorter tail is dropped)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    full = len(durations_s) // chunk
    return [1000.0 * sum(durations_s[i * chunk : (i + 1) * chunk]) / chunk for i in range(full)]


def robust_ms_per_step(durations_s: Sequence[Sequence[float]], chunk: int = CHUNK) -> float:
    """Median chunk mean (ms/step) pooled over the step durations of several runs; NaN without a full chunk."""
    means = [m for run in durations_s for m in chunk_means_ms(run, chunk)]
    return float(statistics.median(means)) if means else float("nan")


def overhead_ms(
    framework_s: Sequence[Sequence[float]],
    bare_s: Sequence[Sequence[float]],
    framework_cpu_s: Sequence[Sequence[float]] = (),
    bare_cpu_s: Sequence[Sequence[float]] = (),
) -> dict[str, Any]:
    """``framework - bare`` in ms/step from the recorded step durations of alternating runs.

    Returns the robust wall-clock ms/step of each side (``robust_ms_per_step``), their difference
    (``overhead_ms``), the difference per adjacent (framework, bare) pair (``overhead_ms_per_pair``, the
    scatter) and, given the process CPU seconds per step, the same difference in CPU time
    (``overhead_cpu_ms``): what the framework computes per step, hardly disturbed by other processes on a
    shared machine (with one torch thread it is the step's work; other threads of the process count too).
    """
    chunk = _chunk_for(framework_s, bare_s)
    fw, bare = robust_ms_per_step(framework_s, chunk), robust_ms_per_step(bare_s, chunk)
    pairs = [
        robust_ms_per_step([f], chunk) - robust_ms_per_step([b], chunk)
        for f, b in zip(framework_s, bare_s, strict=True)
    ]
    result = {
        "chunk_steps": chunk,
        "framework_ms_per_step": fw,
        "bare_ms_per_step": bare,
        "overhead_ms": fw - bare,
        "overhead_ms_per_pair": pairs,
        "overhead_cpu_ms": float("nan"),
    }
    if framework_cpu_s and bare_cpu_s:
        result["framework_cpu_ms_per_step"] = robust_ms_per_step(framework_cpu_s, chunk)
        result["bare_cpu_ms_per_step"] = robust_ms_per_step(bare_cpu_s, chunk)
        result["overhead_cpu_ms"] = result["framework_cpu_ms_per_step"] - result["bare_cpu_ms_per_step"]
    return result


def window_overhead_ms(
    framework_steps_per_s: Sequence[float], bare_steps_per_s: Sequence[float]
) -> dict[str, Any]:
    """``framework - bare`` in ms/step from whole timed windows (on CUDA, where only the window is synced).

    Median over adjacent (framework, bare) pairs of ``1000 / framework - 1000 / bare``.
    """
    pairs = [1000.0 / f - 1000.0 / b for f, b in zip(framework_steps_per_s, bare_steps_per_s, strict=True)]
    return {
        "chunk_steps": None,
        "framework_ms_per_step": 1000.0 / statistics.median(framework_steps_per_s),
        "bare_ms_per_step": 1000.0 / statistics.median(bare_steps_per_s),
        "overhead_ms": float(statistics.median(pairs)),
        "overhead_ms_per_pair": pairs,
        "overhead_cpu_ms": float("nan"),
    }


def _chunk_for(*runs: Sequence[Sequence[float]]) -> int:
    """CHUNK, or the shortest run's length when runs are shorter (smoke plans), so there is one chunk."""
    shortest = min((len(r) for group in runs for r in group), default=CHUNK)
    return max(1, min(CHUNK, shortest))


class PlainModule(pl.LightningModule):
    """The least a LightningModule can be: ``loss_fn(net(x), y)`` per step, one optimizer, nothing logged."""

    def __init__(self, net: torch.nn.Module, loss_fn: Any, optimizer: dict) -> None:
        super().__init__()
        self.net, self.loss_fn = net, loss_fn
        self._optimizer = optimizer  # the framework run's model.optimizer node

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Forward and loss of one (input, target) batch."""
        x, y = batch[:2]
        return self.loss_fn(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The framework run's optimizer (same kind, settings and parameter groups)."""
        return build_optimizer(self._optimizer, self.net)


def lightning_alone_run(trainer: pl.Trainer, case: ModelCase) -> dict[str, Any]:
    """``case`` through Lightning alone: the framework run's network (a copy), loss, optimizer and data module
    in a ``PlainModule`` on a Trainer with no logger, callbacks, progress bar, checkpoints or validation."""
    net, loss_fn, opt_cfg = bare_parts(trainer.lightning_module)
    timer = StepTimer(case.warmup, case.steps)
    plain = pl.Trainer(
        accelerator=trainer.strategy.root_device.type,
        devices=1,
        precision=trainer.precision,
        max_epochs=1,
        limit_train_batches=case.warmup + case.steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    plain.fit(PlainModule(net, loss_fn, opt_cfg), datamodule=trainer.datamodule)
    return {
        "steps_per_s": timer.steps_per_s,
        "durations": timer.durations,
        "cpu_durations": timer.cpu_durations,
    }
