"""Timers and memory probes of the benchmark: step windows, the first training step, resident memory."""

from __future__ import annotations

import math
import resource
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import psutil
import torch

from imagelab.core.atomic import atomic_write_json


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    """The median of ``values``; NaN when there are none."""
    return float(statistics.median(values)) if values else math.nan


class StepTimer(pl.Callback):
    """Time training steps ``warmup`` .. ``warmup + steps`` (batch start to batch start).

    ``first_step`` is the ``time.perf_counter()`` of the first batch start; ``steps_per_s`` the result;
    ``durations`` / ``cpu_durations`` each timed step's wall-clock / process CPU seconds
    (``imagelab.tasks.benchmark.step_overhead``; on CPU only: a CUDA step's duration is not known without a sync per
    step); ``peak_device_bytes`` the peak CUDA memory of the timed steps (0 on CPU).
    """

    def __init__(self, warmup: int = 3, steps: int = 10) -> None:
        super().__init__()
        self.warmup, self.steps = int(warmup), int(steps)
        self.count = 0
        self.first_step: float | None = None
        self.start: float | None = None
        self.steps_per_s: float | None = None
        self.durations: list[float] = []
        self.cpu_durations: list[float] = []
        self._last: tuple[float, float] | None = None
        self.peak_device_bytes = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Record the boundaries of the timed window; ask the trainer to stop after it."""
        now, cpu = time.perf_counter(), time.process_time()
        device = trainer.strategy.root_device
        if self.count == 0:
            self.first_step = now
        if self.warmup < self.count <= self.warmup + self.steps and device.type != "cuda":
            assert self._last is not None
            self.durations.append(now - self._last[0])
            self.cpu_durations.append(cpu - self._last[1])
        self._last = (now, cpu)
        if self.count == self.warmup:
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            self.start = time.perf_counter()
        elif self.count == self.warmup + self.steps:
            sync(device)
            assert self.start is not None
            self.steps_per_s = self.steps / (time.perf_counter() - self.start)
            if device.type == "cuda":
                self.peak_device_bytes = int(torch.cuda.max_memory_allocated(device))
        self.count += 1


def peak_rss_of_this_process() -> int | None:
    """Peak resident memory of this process image in bytes (Linux ``VmHWM``; None elsewhere).

    Unlike ``getrusage``'s ``ru_maxrss``, this is not inflated by the parent's memory that a forked child
    counts until it calls ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process: ``VmHWM``, else ``getrusage``'s maximum."""
    peak = peak_rss_of_this_process()
    return peak if peak is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes() -> int:
    """Resident memory of this process now."""
    return int(psutil.Process().memory_info().rss)


def third_party_modules() -> list[str]:
    """Top-level third-party packages this process has imported, in import order (installed under
    site-packages, not the standard library and not this repository's packages)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    names = []
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None) or ""
        if "." not in name and where and any(where.startswith(r) for r in roots):
            names.append(name)
    return names


class FirstStepTimer(pl.Callback):
    """Write the wall-clock time (``time.time()``) of the first training batch to ``path`` as JSON.

    Used by the start-up section: ``+callbacks.first_step_timer._target_=...FirstStepTimer``. The record
    also lists the third-party packages imported by then (``third_party_modules``); at the end of the run
    the file also gets the process's peak resident memory (``peak_rss_bytes``).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.record: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Record the first batch start (rank zero)."""
        if not self.record and trainer.is_global_zero:
            self.record = {"first_step_unix": time.time(), "peak_rss_bytes": peak_rss_of_this_process()}
            self.record["third_party_modules"] = third_party_modules()
            atomic_write_json(Path(self.path), self.record)

    def teardown(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        """Add the peak resident memory of the whole run."""
        if self.record and trainer.is_global_zero:
            self.record["peak_rss_bytes"] = peak_rss_of_this_process()
            atomic_write_json(Path(self.path), self.record)
