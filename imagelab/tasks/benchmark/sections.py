"""The benchmark's other sections: data throughput, start-up time, GPU fast paths; and their CIFAR-shaped data.

* ``data``: images/s of each data module's training loader alone (batches moved to the device as Lightning
  does), against the images/s the matching model consumes (framework steps/s x batch size).
* ``startup``: wall time of ``scripts/train.py --cfg job`` and of a cold ``scripts/train.py`` start (a new
  Python process) to its first training step, with that run's peak resident memory, split into the
  interpreter's start, the third-party imports and this project's own work (``startup_breakdown``).
* ``fast_paths``: framework steps/s with each GPU fast path alone and all together, and GPU-resident data
  against the DataLoader path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.cifar10_reader import write_cifar10_like
from imagelab.config.instantiation import instantiate_node
from imagelab.tasks.benchmark.framework_vs_bare import compose_train, framework_run
from imagelab.tasks.benchmark.plan import Plan, merge_overrides
from imagelab.tasks.benchmark.timing import FirstStepTimer, median, sync

TRAIN_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train.py"


def data_section(plan: Plan, model_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images/s of each data module's training loader alone, against what its model consumes."""
    device = torch.device(plan.device)
    consumed = {row["model"]: row["framework_images_per_s"] for row in model_rows}
    rows = []
    for case in plan.data:
        cfg = compose_train(merge_overrides(case.overrides, [f"data.batch_size={case.batch_size}"]))
        torch.manual_seed(0)
        datamodule = instantiate_node(cfg.data, "data")
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        start, images = None, 0
        for seen, batch in enumerate(_cycle(loader)):
            if seen == case.warmup:
                sync(device)
                start = time.perf_counter()
            elif seen == case.warmup + case.batches:
                break
            x, _ = (t.to(device, non_blocking=True) for t in batch[:2])
            if seen >= case.warmup:
                images += len(x)
        sync(device)
        assert start is not None
        per_s = images / (time.perf_counter() - start)
        model = consumed.get(case.feeds, math.nan)
        rows.append(
            {
                "data": case.name,
                "batch_size": case.batch_size,
                "images_per_s": per_s,
                "model": case.feeds,
                "model_images_per_s": model,
                "data_over_model": per_s / model if model and not math.isnan(model) else math.nan,
            }
        )
        del loader, datamodule
    return rows


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def startup_section(plan: Plan, work: Path) -> dict[str, Any]:
    """Wall time of ``--cfg job`` and of a cold training start to its first step (new Python processes)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    cfg_job = []
    for _ in range(plan.cfg_job_repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), "--cfg", "job"],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
        )
        cfg_job.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"--cfg job failed: {proc.stderr[-2000:]}")
    first, peaks, modules = [], [], []
    overrides = merge_overrides(
        plan.base_overrides(),
        plan.models[0].overrides,
        [
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=1",
            "++trainer.limit_val_batches=1",
            f"+callbacks.first_step_timer._target_={FirstStepTimer.__module__}.FirstStepTimer",
        ],
    )
    for rep in range(plan.first_step_repeats):
        stamp = work / f"first_step_{rep}.json"
        cwd = work / f"startup_{rep}"
        cwd.mkdir(parents=True, exist_ok=True)
        started = time.time()
        proc = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), *overrides, f"+callbacks.first_step_timer.path={stamp}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
        )
        if proc.returncode != 0 or not stamp.is_file():
            raise RuntimeError(f"the start-up run failed: {proc.stderr[-3000:]}")
        record = json.loads(stamp.read_text())
        first.append(record["first_step_unix"] - started)
        peaks.append(record.get("peak_rss_bytes") or 0)
        modules = record.get("third_party_modules") or modules
        shutil.rmtree(cwd, ignore_errors=True)
    return {
        **startup_breakdown(modules, plan.first_step_repeats, median(first), env, work),
        "cfg_job_s": cfg_job,
        "cfg_job_median_s": median(cfg_job),
        "first_step_cold_s": first,
        "first_step_cold_median_s": median(first),
        "first_step_model": plan.models[0].name if first else None,
        "peak_rss_cold_run_bytes": max(peaks) if peaks and max(peaks) > 0 else None,
    }


IMPORT_SCRIPT = """
import sys, time
start = time.perf_counter()
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception:
        pass
print(time.perf_counter() - start)
"""


def startup_breakdown(
    modules: list[str], repeats: int, first_step_s: float, env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    """Split a cold start to the first step into the interpreter's start, third-party imports and the rest.

    ``modules``: the third-party packages the training run had imported by its first step, in import order;
    each of ``repeats`` new processes imports them (``imports_s``); ``python -c pass`` times the interpreter
    (``python_start_s``). What remains of ``first_step_s`` is this project's own work before the first step
    (config, data, model, callbacks, Trainer set-up, checks): ``own_s``, the part a regression of ours moves.
    """
    if not modules or repeats < 1 or math.isnan(first_step_s):
        return {"third_party_modules": modules, "python_start_s": None, "imports_s": None, "own_s": None}
    starts, imports = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env, cwd=cwd)
        starts.append(time.perf_counter() - started)
        proc = subprocess.run(
            [sys.executable, "-c", IMPORT_SCRIPT, *modules],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=cwd,
        )
        imports.append(float(proc.stdout.strip().splitlines()[-1]))
    python_start, imports_s = median(starts), median(imports)
    return {
        "third_party_modules": modules,
        "python_start_s": python_start,
        "imports_s": imports_s,
        "own_s": first_step_s - python_start - imports_s,
    }


def fast_path_section(
    plan: Plan,
    work: Path,
    keep_runs: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Framework steps/s per fast-path variant, and GPU-resident data against the loader path.

    ``progress`` gets the rows measured so far after every variant (to write a partial report).
    """
    variants: list[dict[str, Any]] = []
    resident: list[dict[str, Any]] = []
    for m, case in enumerate(plan.fast_path_models):
        base = None
        for v, (name, extra) in enumerate(plan.fast_path_variants):
            sps, peaks = [], []
            for rep in range(plan.fast_path_repeats):
                run_dir = work / f"fast_{m}_{v}_{rep}"
                res = framework_run(case, extra, run_dir, plan)
                sps.append(res["steps_per_s"])
                peaks.append(res["peak_device_bytes"])
                del res
                if not keep_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
            steps_per_s = median(sps)
            base = steps_per_s if base is None else base
            variants.append(
                {
                    "model": case.name,
                    "variant": name,
                    "overrides": extra,
                    "steps_per_s": steps_per_s,
                    "images_per_s": steps_per_s * case.batch_size,
                    "speedup": steps_per_s / base,
                    "peak_device_bytes": max(peaks),
                }
            )
            if progress is not None:
                progress({"variants": variants, "resident_vs_loader": resident})
        for name, extra in plan.resident_vs_loader:
            run_dir = work / f"resident_{m}_{name}"
            res = framework_run(case, [*plan.resident_base, *extra], run_dir, plan)
            resident.append(
                {
                    "model": case.name,
                    "data_path": name,
                    "overrides": [*plan.resident_base, *extra],
                    "steps_per_s": res["steps_per_s"],
                    "images_per_s": res["steps_per_s"] * case.batch_size,
                }
            )
            del res
            if not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
    return {"variants": variants, "resident_vs_loader": resident}


def write_cifar_like(root: Path, n_train: int, n_test: int) -> Path:
    """Random CIFAR-10-shaped data in the official pickle format under ``root`` (no download)."""
    if not (root / "cifar-10-batches-py").is_dir():
        rng = np.random.default_rng(0)
        train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
        test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
        write_cifar10_like(
            root,
            train,
            np.arange(n_train) % 10,
            test,
            np.arange(n_test) % 10,
            [f"class{i}" for i in range(10)],
        )
    return root


@contextmanager
def torch_flags() -> Iterator[None]:
    """Restore process-wide flags the fast-path runs change."""
    benchmark, matmul = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch.set_float32_matmul_precision(matmul)
