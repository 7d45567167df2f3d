"""The overhead section: training steps/s of each model through the framework and through a bare loop.

Framework and bare runs alternate (F B F B ...), each timed over ``steps`` steps after ``warmup`` steps; the
ratio is the median over adjacent (framework, bare) pairs of bare / framework steps/s, which a shared
machine's other jobs disturb least. Near-zero-compute rows also get a Lightning-alone reference run and the
framework's cost in ms/step (``imagelab.tasks.benchmark.step_overhead``), and one more framework run that
splits it by callback, logger and logging call (``imagelab.tasks.benchmark.step_costs``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra

from imagelab.core.errors import UserError
from imagelab.tasks.benchmark.bare import bare_run
from imagelab.tasks.benchmark.plan import ModelCase, Plan, merge_overrides
from imagelab.tasks.benchmark.step_costs import StepCostMeter
from imagelab.tasks.benchmark.step_overhead import lightning_alone_run, overhead_ms, window_overhead_ms
from imagelab.tasks.benchmark.timing import StepTimer, median, rss_bytes
from imagelab.tasks.runner import finish_wandb
from imagelab.tasks.training import train

log = logging.getLogger(__name__)


def compose_train(overrides: list[str]) -> Any:
    """The train config with ``overrides``, composed like ``scripts/train.py`` (inside this Hydra app)."""
    if not GlobalHydra.instance().is_initialized():
        raise UserError("run the benchmark through scripts/benchmark.py (it needs the Hydra app's config)")
    return compose(config_name="train", overrides=overrides)


def framework_run(case: ModelCase, extra: list[str], run_dir: Path, plan: Plan) -> dict[str, Any]:
    """Train ``case`` through the framework for its timing window; returns steps/s and the trainer."""
    overrides = merge_overrides(
        plan.base_overrides(),
        case.overrides,
        extra,
        [
            f"paths.output_dir={run_dir}",
            # one short epoch: the timed window, then the run's own validation (2 batches) and checkpoint
            "trainer.max_epochs=1",
            f"++trainer.limit_train_batches={case.warmup + case.steps + 1}",
            "++trainer.limit_val_batches=2",
            f"+callbacks.bench_timer._target_={StepTimer.__module__}.StepTimer",
            f"+callbacks.bench_timer.warmup={case.warmup}",
            f"+callbacks.bench_timer.steps={case.steps}",
        ],
    )
    cfg = compose_train(overrides)
    started = time.perf_counter()
    try:
        result = train(cfg)
    finally:
        finish_wandb()
    trainer = result["trainer"]
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
    if timer.steps_per_s is None:
        raise RuntimeError(
            f"{case.name}: the epoch ended before {case.warmup + case.steps} steps; use more data per epoch"
        )
    return {
        "steps_per_s": timer.steps_per_s,
        "durations": timer.durations,
        "cpu_durations": timer.cpu_durations,
        "first_step_s": (timer.first_step or started) - started,
        "peak_device_bytes": timer.peak_device_bytes,
        "trainer": trainer,
    }


def overhead_section(plan: Plan, work: Path, keep_runs: bool) -> list[dict[str, Any]]:
    """Framework vs bare loop for every model of the plan, alternating F B F B ..."""
    rows = []
    for m, case in enumerate(plan.models):
        fw, bare, first = [], [], []
        fw_durations, bare_durations, fw_cpu, bare_cpu = [], [], [], []
        alone: dict[str, list] = {"steps_per_s": [], "durations": [], "cpu_durations": []}
        peak_dev = 0
        for rep in range(plan.repeats):
            run_dir = work / f"overhead_{m}_{rep}"
            res = framework_run(case, [], run_dir, plan)
            fw.append(res["steps_per_s"])
            fw_durations.append(res["durations"])
            fw_cpu.append(res["cpu_durations"])
            first.append(res["first_step_s"])
            peak_dev = max(peak_dev, res["peak_device_bytes"])
            bare_res = bare_run(res["trainer"], case)
            bare.append(bare_res["steps_per_s"])
            bare_durations.append(bare_res["durations"])
            bare_cpu.append(bare_res["cpu_durations"])
            if case.overhead_goal_ms is not None:  # near-zero rows: Lightning alone as a third reference
                for key, value in lightning_alone_run(res["trainer"], case).items():
                    alone[key].append(value)
            del res
            if not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
        ratios = [b / f for b, f in zip(bare, fw, strict=True)]
        rows.append(
            {
                "model": case.name,
                "batch_size": case.batch_size,
                "timed_steps": case.steps,
                "repeats": plan.repeats,
                "framework_steps_per_s": fw,
                "bare_steps_per_s": bare,
                "framework_median": median(fw),
                "bare_median": median(bare),
                "framework_best": max(fw),
                "bare_best": max(bare),
                # median over adjacent (framework, bare) pairs: robust to other jobs slowing single windows
                "ratio": median(ratios),
                "ratio_of_best": max(bare) / max(fw),
                "ratio_of_medians": median(bare) / median(fw),
                "ratio_per_pair": ratios,
                "framework_images_per_s": max(fw) * case.batch_size,
                "first_step_in_process_s": median(first),
                "peak_device_bytes": peak_dev,
                "rss_after_bytes": rss_bytes(),
                "overhead_goal_ms": case.overhead_goal_ms,
                # framework - bare in ms/step: from per-step durations on CPU, from the synced windows on CUDA
                **(
                    overhead_ms(fw_durations, bare_durations, fw_cpu, bare_cpu)
                    if all(fw_durations) and all(bare_durations)
                    else window_overhead_ms(fw, bare)
                ),
                "lightning_alone": _lightning_alone(alone, bare, bare_durations, bare_cpu),
                # near-zero rows: CPU ms per step of each callback, logger, logging call (step_costs.py)
                "step_costs": (
                    step_costs(case, work / f"step_costs_{m}", plan, keep_runs)
                    if case.overhead_goal_ms is not None
                    else None
                ),
            }
        )
        cpu_fw, cpu_bare = rows[-1].get("framework_cpu_ms_per_step"), rows[-1].get("bare_cpu_ms_per_step")
        # the ratio in process CPU time: the work per step, hardly moved by other jobs on a shared machine
        rows[-1]["cpu_ratio"] = cpu_fw / cpu_bare if cpu_fw and cpu_bare else math.nan
        log.info("overhead %s: ratio %.3f", case.name, rows[-1]["ratio"])
    return rows


def step_costs(case: ModelCase, run_dir: Path, plan: Plan, keep_runs: bool) -> list[dict[str, Any]]:
    """One more framework run of ``case`` with a ``StepCostMeter`` over its timing window: its rows."""
    meter = f"{StepCostMeter.__module__}.StepCostMeter"
    extra = [
        f"+callbacks.step_costs._target_={meter}",
        f"+callbacks.step_costs.warmup={case.warmup}",
        f"+callbacks.step_costs.steps={case.steps}",
    ]
    res = framework_run(case, extra, run_dir, plan)
    rows = next(c for c in res["trainer"].callbacks if isinstance(c, StepCostMeter)).rows
    del res
    if not keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def _lightning_alone(
    alone: dict[str, list], bare: list[float], bare_durations: list[list[float]], bare_cpu: list[list[float]]
) -> dict[str, Any] | None:
    """Lightning alone - bare loop (ms/step) from ``lightning_alone_run``'s records; None when not measured."""
    if not alone["steps_per_s"]:
        return None
    if all(alone["durations"]) and all(bare_durations):
        return overhead_ms(alone["durations"], bare_durations, alone["cpu_durations"], bare_cpu)
    return window_overhead_ms(alone["steps_per_s"], bare)
