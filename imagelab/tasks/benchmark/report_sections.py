"""Markdown sections of the benchmark report beyond the main tables: per-step costs and the start-up split."""

from __future__ import annotations

from typing import Any


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} s"


def step_costs_lines(report: dict[str, Any]) -> list[str]:
    """What each callback, logger and logging call costs per training step (near-zero-compute rows)."""
    rows = [r for r in report.get("overhead", []) if r.get("step_costs")]
    if not rows:
        return []
    lines = [
        "",
        "### Per-step cost of each part (process CPU ms per training step, near-zero-compute models)",
        "",
        "Measured in one more framework run (`imagelab/tasks/benchmark/step_costs.py`): CPU time inside each "
        "part, without the other measured parts it calls; a part called on some steps only (a logger write "
        "every `log_every_n_steps`) is averaged over all steps.",
    ]
    for r in rows:
        total = sum(c["cpu_ms_per_step"] for c in r["step_costs"])
        lines += ["", f"{r['model']}: {total:.3f} ms per step in all", ""]
        lines += ["| part | calls per step | CPU ms per step |", "| --- | --- | --- |"]
        for c in r["step_costs"]:
            lines.append(f"| {c['part']} | {c['calls_per_step']:.2f} | {_ms(c['cpu_ms_per_step'])} |")
    return lines


def startup_split_lines(report: dict[str, Any]) -> list[str]:
    """The cold start to the first step split into interpreter, third-party imports and this project's part."""
    s = report.get("startup") or {}
    if s.get("imports_s") is None:
        return []
    return [
        f"- of which: Python's start {_s(s['python_start_s'])}, importing the "
        f"{len(s['third_party_modules'])} third-party packages the run had loaded by its first step "
        f"{_s(s['imports_s'])} (a new process importing them alone), **this project's own work "
        f"{_s(s['own_s'])}** (config, data, model, callbacks, Trainer set-up and the imports of its own modules)",
    ]


def timm_train_lines(report: dict[str, Any]) -> list[str]:
    """scripts/train.py against timm's train.py on the same job (``imagelab.tasks.benchmark.timm_compare``)."""
    t = report.get("timm_train")
    if not t:
        return []
    lines = ["", "## scripts/train.py vs timm's train.py (same job, whole process)", ""]
    if "skipped" in t:
        return [*lines, t["skipped"]]
    lines += [
        f"- timm: `python {t['timm_command']}`",
        f"- ours: `python {t['ours_command']}`",
        "",
        "| pair | timm wall / CPU | ours wall / CPU | ours / timm (wall) | best val acc timm / ours |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, p in enumerate(t["pairs"]):
        lines.append(
            f"| {i + 1} | {p['timm_s']:.1f} / {p['timm_cpu_s']:.1f} s | {p['ours_s']:.1f} / {p['ours_cpu_s']:.1f} s "
            f"| {p['ours_s'] / p['timm_s']:.3f} | {p['timm_best_val_acc']:.4f} / {p['ours_best_val_acc']:.4f} |"
        )
    lines += ["", f"Median of pairs: **{t['ratio']:.3f}** wall, {t['cpu_ratio']:.3f} in CPU time."]
    return lines
