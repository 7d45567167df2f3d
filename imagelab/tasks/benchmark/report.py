"""The benchmark's report: the issue's goals as pass/fail rows, ``report.json`` and ``report.md`` (atomic).

Goals are reported, never asserted. The report is rewritten after every section (``partial: true``) so a run
stopped by a time limit still leaves what it measured.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from imagelab.core.atomic import atomic_write_json, atomic_write_text
from imagelab.tasks.benchmark.report_sections import startup_split_lines, step_costs_lines, timm_train_lines
from imagelab.tasks.benchmark.timing import peak_rss_bytes

OWN_GOAL_MS = 0.5  # this project's part of a near-zero-compute step: framework - Lightning alone, ms/step
GOALS = {
    "overhead_ratio": 1.03,  # bare steps/s over framework steps/s, on CPU
    "cfg_job_s": 1.5,  # scripts/train.py --cfg job
    "data_over_model": 3.0,  # data images/s over model images/s, on GPU
}


def write_report(report: dict[str, Any], out: Path, started: float, partial: bool) -> dict[str, Any]:
    """Add memory, load, duration and goals to ``report``; write report.json and report.md atomically."""
    report["partial"] = partial
    report["memory"] = {
        "peak_rss_benchmark_process_bytes": peak_rss_bytes(),
        "peak_device_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
    }
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["duration_s"] = round(time.time() - started, 1)
    report["goals"] = evaluate_goals(report)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def evaluate_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals as pass/fail rows (``applies`` false where the mode does not measure them)."""
    on_gpu = report["mode"] == "gpu"
    goals = []
    for row in report.get("overhead", []):
        limit_ms = row.get("overhead_goal_ms")
        if limit_ms is not None:  # near-zero-compute rows: the framework's own cost per step
            value = row.get("overhead_ms", math.nan)
            goals.append(
                {
                    "goal": f"framework - bare <= {limit_ms} ms/step on CPU: {row['model']}",
                    "value": None if math.isnan(value) else round(value, 3),
                    "applies": report["mode"] == "cpu",
                    "pass": bool(value <= limit_ms),
                }
            )
            own = _own_part(row)
            if own is not None:
                goals.append(
                    {
                        "goal": f"framework - Lightning alone <= {OWN_GOAL_MS} ms/step on CPU, wall / CPU time: "
                        f"{row['model']}",
                        "value": " / ".join("-" if math.isnan(v) else f"{v:.3f}" for v in own),
                        "applies": report["mode"] == "cpu",
                        "pass": all(v <= OWN_GOAL_MS for v in own),
                    }
                )
            continue
        goals.append(
            {
                "goal": f"framework/bare ratio <= {GOALS['overhead_ratio']} on CPU: {row['model']}",
                "value": round(row["ratio"], 3),
                "applies": report["mode"] == "cpu",
                "pass": row["ratio"] <= GOALS["overhead_ratio"],
            }
        )
    timm = report.get("timm_train") or {}
    if "ratio" in timm:
        goals.append(
            {
                "goal": f"scripts/train.py / timm's train.py, whole process, same job <= 1.0 on CPU (CPU-time "
                f"ratio {timm['cpu_ratio']:.3f})",
                "value": round(timm["ratio"], 3),
                "applies": report["mode"] == "cpu",
                "pass": timm["ratio"] <= 1.0,
            }
        )
    startup = report.get("startup")
    if startup:
        goals.append(
            {
                "goal": f"scripts/train.py --cfg job < {GOALS['cfg_job_s']} s",
                "value": round(startup["cfg_job_median_s"], 3),
                "applies": True,
                "pass": startup["cfg_job_median_s"] < GOALS["cfg_job_s"],
            }
        )
    for row in report.get("data", []):
        goals.append(
            {
                "goal": f"data >= {GOALS['data_over_model']}x model on GPU: {row['data']}",
                "value": None if math.isnan(row["data_over_model"]) else round(row["data_over_model"], 2),
                "applies": on_gpu,
                "pass": bool(row["data_over_model"] >= GOALS["data_over_model"]),
            }
        )
    resident = (report.get("fast_paths") or {}).get("resident_vs_loader", [])
    by_model: dict[str, dict[str, float]] = {}
    for row in resident:
        by_model.setdefault(row["model"], {})[row["data_path"]] = row["steps_per_s"]
    for model, paths in by_model.items():
        if {"loader", "resident"} <= set(paths):
            goals.append(
                {
                    "goal": f"GPU-resident data beats the loader path on GPU: {model}",
                    "value": round(paths["resident"] / paths["loader"], 3),
                    "applies": on_gpu,
                    "pass": paths["resident"] > paths["loader"],
                }
            )
    return goals


def _own_part(row: dict[str, Any]) -> tuple[float, float] | None:
    """This project's per-step cost: framework - Lightning alone (wall, CPU ms/step); None if not measured."""
    alone = row.get("lightning_alone")
    if not alone:
        return None
    return (
        row.get("overhead_ms", math.nan) - alone.get("overhead_ms", math.nan),
        row.get("overhead_cpu_ms", math.nan) - alone.get("overhead_cpu_ms", math.nan),
    )


def _mb(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:.0f} MB"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _sub(a: Any, b: Any) -> float | None:
    return None if a is None or b is None or math.isnan(a) or math.isnan(b) else a - b


def _overhead_ms_cell(row: dict[str, Any]) -> str:
    value = row.get("overhead_ms", math.nan)
    if value is None or math.isnan(value):
        return "-"
    cell = f"{value:.2f} ({_num(row['framework_ms_per_step'])} - {_num(row['bare_ms_per_step'])})"
    return f"**{cell}**" if row.get("overhead_goal_ms") is not None else cell


def _header(report: dict[str, Any]) -> list[str]:
    """Title (PARTIAL when a time limit stopped the run), command, duration and the machine."""
    m = report["machine"]
    partial = (
        " - PARTIAL: stopped before the end, the missing rows were not measured"
        if report.get("partial")
        else ""
    )
    return [
        f"# Benchmark ({report['mode']} mode){partial}",
        "",
        f"`{report.get('command')}` on {report['started']}, {report['duration_s']} s. Machine: {m['platform']}, "
        f"{m['cpu_count']} CPUs ({m['torch_threads']} torch threads), load average "
        f"{', '.join(f'{v:.1f}' for v in m['load_average'])} before / "
        f"{', '.join(f'{v:.1f}' for v in m.get('load_average_after', []))} after; "
        f"GPU: {m['cuda_device'] or 'none'}; torch {m['torch']}, lightning {m['lightning']}.",
    ]


def _goals_section(report: dict[str, Any]) -> list[str]:
    """One row per goal: its value, whether this mode measures it, and the verdict."""
    lines = ["", "## Goals", "", "| goal | value | applies here | pass |", "| --- | --- | --- | --- |"]
    for g in report["goals"]:
        verdict = ("PASS" if g["pass"] else "FAIL") if g["applies"] else "(not measured in this mode)"
        lines.append(f"| {g['goal']} | {g['value']} | {'yes' if g['applies'] else 'no'} | {verdict} |")
    return lines


def _overhead_section(rows: list[dict[str, Any]]) -> list[str]:
    """Framework vs bare PyTorch steps/s per model, with the note on how the ms/step column is measured."""
    lines = [
        "",
        "## Framework vs bare PyTorch (training steps/s over alternating repeats: best / median)",
        "",
        "| model | batch | framework | bare loop | ratio bare/framework (median of pairs) | per-pair ratios | "
        "ratio of best / of medians | ratio in CPU time | framework - bare, ms/step | first step in-process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        pairs = ", ".join(f"{x:.3f}" for x in r["ratio_per_pair"])
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {_num(r['framework_best'])} / {_num(r['framework_median'])} | "
            f"{_num(r['bare_best'])} / {_num(r['bare_median'])} | **{_num(r['ratio'], 3)}** | {pairs} | "
            f"{_num(r['ratio_of_best'], 3)} / {_num(r['ratio_of_medians'], 3)} | {_num(r.get('cpu_ratio'), 3)} | "
            f"{_overhead_ms_cell(r)} | {_num(r['first_step_in_process_s'])} s |"
        )
    return [
        *lines,
        "",
        "framework - bare, ms/step: median over chunks of consecutive steps (each chunk holds its logger "
        "writes) of the step durations of all repeats, framework minus bare loop (CPU only). Ratio in CPU "
        "time: the same medians in process CPU time (framework / bare), the work per step, which other "
        "jobs on a shared machine hardly change.",
    ]


def _overhead_split_section(rows: list[dict[str, Any]]) -> list[str]:
    """For the models measured with Lightning alone too: Lightning's part and this project's of the overhead."""
    split = [r for r in rows if r.get("lightning_alone")]
    if not split:
        return []
    lines = [
        "",
        "### Where the per-step overhead goes (near-zero-compute models, ms/step)",
        "",
        "| model | framework - bare (wall / CPU) | Lightning alone - bare (wall / CPU) | "
        "this project's part: framework - Lightning alone (wall / CPU) |",
        "| --- | --- | --- | --- |",
    ]
    for r in split:
        a = r["lightning_alone"]
        own = _sub(r.get("overhead_ms"), a.get("overhead_ms"))
        own_cpu = _sub(r.get("overhead_cpu_ms"), a.get("overhead_cpu_ms"))
        lines.append(
            f"| {r['model']} | {_num(r.get('overhead_ms'))} / {_num(r.get('overhead_cpu_ms'))} | "
            f"{_num(a.get('overhead_ms'))} / {_num(a.get('overhead_cpu_ms'))} | {_num(own)} / {_num(own_cpu)} |"
        )
    return lines


def _data_section(rows: list[dict[str, Any]]) -> list[str]:
    """Data module throughput alone next to what the model consumes."""
    lines = [
        "",
        "## Data throughput alone vs what the model consumes (images/s)",
        "",
        "| data module | batch | data alone | model consumes | data / model |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['batch_size']} | {_num(r['images_per_s'], 0)} | "
            f"{_num(r['model_images_per_s'], 0)} ({r['model']}) | {_num(r['data_over_model'])} |"
        )
    return lines


def _startup_section(s: dict[str, Any]) -> list[str]:
    """``--cfg job`` time and the cold start to the first training step."""
    cold = f"{_num(s['first_step_cold_median_s'])} s" if s["first_step_cold_s"] else "skipped in this mode"
    return [
        "",
        "## Start-up",
        "",
        f"- `python scripts/train.py --cfg job`: median {_num(s['cfg_job_median_s'], 3)} s "
        f"({', '.join(f'{v:.2f}' for v in s['cfg_job_s'])})",
        f"- cold `python scripts/train.py` to its first training step ({s['first_step_model'] or '-'}): {cold}"
        f"; peak RSS of that run {_mb(s['peak_rss_cold_run_bytes'])}",
    ]


def _fast_paths_section(fp: dict[str, Any]) -> list[str]:
    """Steps/s of each fast-path variant, then GPU-resident data against the loader path."""
    lines = [
        "",
        "## Fast paths (framework steps/s)",
        "",
        "| model | variant | steps/s | images/s | speed-up | peak device memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in fp["variants"]:
        lines.append(
            f"| {r['model']} | {r['variant']} | {_num(r['steps_per_s'])} | {_num(r['images_per_s'], 0)} | "
            f"{_num(r['speedup'])}x | {_mb(r['peak_device_bytes'])} |"
        )
    if fp["resident_vs_loader"]:
        lines += ["", "| model | data path | steps/s | images/s |", "| --- | --- | --- | --- |"]
        for r in fp["resident_vs_loader"]:
            lines.append(
                f"| {r['model']} | {r['data_path']} | {_num(r['steps_per_s'])} | {_num(r['images_per_s'], 0)} |"
            )
    return lines


def _memory_section(mem: dict[str, Any]) -> list[str]:
    """Peak host and device memory of the benchmark process."""
    return [
        "",
        "## Memory",
        "",
        f"- peak host RSS of the benchmark process: {_mb(mem['peak_rss_benchmark_process_bytes'])}",
        f"- peak device memory: {_mb(mem['peak_device_bytes'])}",
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what docs/scaling.md shows): one section per measured part."""
    lines = _header(report) + _goals_section(report)
    if report.get("overhead"):
        lines += _overhead_section(report["overhead"]) + _overhead_split_section(report["overhead"])
        lines += step_costs_lines(report)
    if report.get("data"):
        lines += _data_section(report["data"])
    if report.get("startup"):
        lines += _startup_section(report["startup"]) + startup_split_lines(report)
    if report.get("fast_paths"):
        lines += _fast_paths_section(report["fast_paths"])
    lines += timm_train_lines(report)
    return "\n".join(lines + _memory_section(report["memory"]))
