"""``run_benchmark``: check the options, run the plan's sections in order and write the report after each."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning
import torch

from imagelab.core.errors import UserError
from imagelab.tasks.benchmark.framework_vs_bare import overhead_section
from imagelab.tasks.benchmark.plan import load_plan, plan_names, select_variants
from imagelab.tasks.benchmark.report import write_report
from imagelab.tasks.benchmark.sections import (
    data_section,
    fast_path_section,
    startup_section,
    torch_flags,
    write_cifar_like,
)
from imagelab.tasks.benchmark.timm_compare import timm_train_section

SECTIONS: tuple[str, ...] = ("overhead", "data", "startup", "fast_paths", "timm_train")


def modes() -> tuple[str, ...]:
    """``auto`` and the modes with a plan in ``conf/benchmark/``."""
    return ("auto", *plan_names())


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _check_options(mode: str, sections: list[str], repeats: int | None, threads: int | None) -> str:
    """The mode to run (``auto`` resolved); a UserError for a bad option."""
    if mode not in modes():
        raise UserError(f"mode must be one of {', '.join(modes())}, got {mode!r}")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise UserError(f"unknown benchmark section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise UserError(f"repeats must be a positive integer or null, got {repeats!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads must be a positive integer or null, got {threads!r}")
    if mode == "auto":
        mode = "gpu" if torch.cuda.is_available() else "cpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise UserError("mode=gpu needs a CUDA GPU; use mode=cpu or mode=smoke here")
    return mode


def run_benchmark(
    mode: str = "auto",
    out_dir: str | Path = ".",
    repeats: int | None = None,
    sections: list[str] | None = None,
    keep_runs: bool = False,
    threads: int | None = None,
    fast_path_variants: list[str] | None = None,
    models: list[str] | None = None,
    timm_train_script: str | None = None,
    timm_epochs: int = 8,
) -> dict[str, Any]:
    """Run the plan of ``mode``, write ``report.json`` and ``report.md`` to ``out_dir``; return the report.

    ``threads`` sets torch's intra-op threads (None = torch's default); one thread makes CPU timings on a
    machine shared with other jobs much steadier (two OpenMP threads stall each other when one is descheduled).
    ``fast_path_variants``: run only the fast-path variants whose name contains one of these words (None = all;
    the first one kept is the speed-up baseline). ``models``: measure only the overhead-section models whose
    name contains one of these words (None = all), e.g. ``["tiny"]`` for the per-step overhead rows.
    ``timm_train_script``: timm's ``train.py`` for the ``timm_train`` section (``timm_epochs`` epochs, ``repeats``
    alternating pairs; skipped with a message when None).
    """
    sections = list(sections if sections is not None else SECTIONS)
    mode = _check_options(mode, sections, repeats, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    plan = load_plan(mode, work / "cifar", repeats)
    if fast_path_variants is not None:
        plan.fast_path_variants = select_variants(plan.fast_path_variants, fast_path_variants)
    if models is not None:
        names = [(case.name, case) for case in plan.models]
        plan.models = [case for _, case in select_variants(names, models, "models")]
    write_cifar_like(work / "cifar", *plan.cifar_images)
    report: dict[str, Any] = {
        "mode": mode,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": _machine(),
        "sections": sections,
    }
    # the report is written after every section (and fast-path variant) with "partial": true, so a run
    # stopped by a time limit (scripts/gpu_check.sh) still leaves what it measured
    with torch_flags():
        rows = overhead_section(plan, work, keep_runs) if {"overhead", "data"} & set(sections) else []
        if "overhead" in sections:
            report["overhead"] = rows
            write_report(report, out, started, partial=True)
        if "data" in sections:
            report["data"] = data_section(plan, rows)
        if "startup" in sections:
            report["startup"] = startup_section(plan, work)
            write_report(report, out, started, partial=True)
        if "fast_paths" in sections and plan.fast_path_models:

            def progress(fast_rows: dict[str, Any]) -> None:
                report["fast_paths"] = fast_rows
                write_report(report, out, started, partial=True)

            report["fast_paths"] = fast_path_section(plan, work, keep_runs, progress)
        if "timm_train" in sections:
            report["timm_train"] = timm_train_section(timm_train_script, timm_epochs, plan.repeats, work)
    if not keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return write_report(report, out, started, partial=False)
