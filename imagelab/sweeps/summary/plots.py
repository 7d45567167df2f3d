"""The sweep's plots (PNG, written atomically): the objective against every swept parameter, and accuracy
against trainable parameters for fine-tuning sweeps. Drawn on matplotlib ``Figure`` objects (no pyplot state,
no GUI backend)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter

from imagelab.core.atomic import atomic_write
from imagelab.sweeps.summary.collect import TRAINABLE_KEY, Job, SweepSummary, finite, parse_value
from imagelab.sweeps.summary.labels import fmt, is_numeric, metric_label, param_label, use_log_scale


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def new_axes() -> tuple[Figure, Any]:
    """A figure of the summary's size with one axes."""
    fig = Figure(figsize=(6.4, 4.2))
    return fig, fig.add_subplot(1, 1, 1)


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight"))
    return path


def _scatter(
    ax: Any, xs: list[Any], ys: list[float], jobs: list[Job], best: str | None, color_by: str | None = None
) -> None:
    """Points labelled with their job names, the best one starred, coloured by ``color_by``'s value."""
    groups = [fmt(j.params.get(color_by)) for j in jobs] if color_by else [""] * len(jobs)
    for group in sorted(
        dict.fromkeys(groups), key=lambda g: (not is_numeric([parse_value(g)]), parse_value(g), g)
    ):
        idx = [i for i, g in enumerate(groups) if g == group]
        label = f"{color_by} = {group}" if color_by else "job"
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=40, zorder=3, label=label)
    labels: dict[tuple[Any, float], list[str]] = {}  # jobs on the same spot share one label
    for x, y, job in zip(xs, ys, jobs, strict=True):
        labels.setdefault((x, y), []).append(f"{job.name} (pruned)" if job.status == "pruned" else job.name)
    for (x, y), names in labels.items():
        text = ", ".join(names)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color="0.3")
    for x, y, job in zip(xs, ys, jobs, strict=True):
        if job.name == best:
            ax.scatter(
                [x],
                [y],
                s=220,
                marker="*",
                facecolors="none",
                edgecolors="black",
                zorder=4,
                label=f"best (job {job.name})",
            )
    ax.margins(x=0.08, y=0.12)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _color_param(summary: SweepSummary, name: str) -> str | None:
    """Another swept parameter with few values, to tell apart points that share an x value (grid sweeps)."""
    for other in summary.swept:
        distinct = len({fmt(j.params.get(other)) for j in summary.ranked})
        if other != name and distinct <= 6 and distinct < len(summary.ranked):  # groups that repeat
            return other
    return None


def plot_objective_vs_params(summary: SweepSummary, out_dir: Path) -> list[Path]:
    """One PNG per swept parameter: the objective of every ranked job against the parameter's value."""
    paths = []
    ranked, best = summary.ranked, summary.best
    not_shown = len(summary.jobs) - len(ranked)
    for name in summary.swept:
        values = [j.params.get(name) for j in ranked]
        if not ranked:
            continue
        fig, ax = new_axes()
        numeric = is_numeric(values)
        log = use_log_scale(name, values)
        xs: list[Any] = values
        if not numeric:  # categories in first-seen order
            categories = list(dict.fromkeys(fmt(v) for v in values))
            xs = [categories.index(fmt(v)) for v in values]
            ax.set_xticks(range(len(categories)), categories)
        best_name = best.name if best else None
        _scatter(ax, xs, [j.objective for j in ranked], ranked, best_name, _color_param(summary, name))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(param_label(name, log))
        ax.set_ylabel(metric_label(summary.metric, summary.mode))
        note = f", {not_shown} failed/unfinished not shown" if not_shown else ""
        ax.set_title(f"{summary.metric} vs {name} ({len(ranked)} jobs{note})", fontsize=10)
        paths.append(save_png(fig, out_dir / f"objective_vs_{_safe_name(name)}.png"))
    return paths


def plot_accuracy_vs_trainable(summary: SweepSummary, out_dir: Path) -> list[Path]:
    """Accuracy (or the objective) against trainable parameters, when those differ between jobs or the
    model is fine-tuned (only part of it trainable): the cost/benefit view of fine-tuning sweeps."""
    jobs = [j for j in summary.ranked if j.metrics.get(TRAINABLE_KEY)]
    if not jobs:
        return []
    counts = {j.metrics[TRAINABLE_KEY] for j in jobs}
    partly = any(float(j.metrics.get("model/params_trainable_fraction", 1.0)) < 1.0 for j in jobs)
    if len(counts) < 2 and not partly:
        return []
    acc_keys = [k for k in ("test/acc", "val/acc", "val/acc_best") if any(k in j.metrics for j in jobs)]
    if summary.metric and "acc" in summary.metric.split("/")[-1]:
        acc_keys = [summary.metric, *acc_keys]
    y_key = acc_keys[0] if acc_keys else None
    ys = [j.objective if y_key in (None, summary.metric) else finite(j.metrics.get(y_key)) for j in jobs]
    pairs = [(j, y) for j, y in zip(jobs, ys, strict=True) if y is not None]
    if not pairs:
        return []
    fig, ax = new_axes()
    xs = [float(j.metrics[TRAINABLE_KEY]) for j, _ in pairs]
    best = summary.best.name if summary.best else None
    _scatter(ax, xs, [y for _, y in pairs], [j for j, _ in pairs], best)
    log = min(xs) > 0 and max(xs) / min(xs) >= 10
    if log:
        ax.set_xscale("log")
    _readable_count_axis(ax.xaxis, log)
    ax.set_xlabel("trainable parameters (count" + (", log scale)" if log else ")"))
    y_metric = y_key or summary.metric
    ax.set_ylabel(metric_label(y_metric, summary.mode if y_metric == summary.metric else "max"))
    what = "accuracy" if y_key else "objective"
    ax.set_title(f"{y_metric} vs trainable parameters ({len(pairs)} jobs)", fontsize=10)
    return [save_png(fig, out_dir / f"{what}_vs_trainable_params.png")]


def _readable_count_axis(axis: Any, log: bool) -> None:
    """Parameter counts as 75k / 1.2M, at most 6 labels, no minor-tick labels: labels that never overlap."""
    formatter = EngFormatter(places=0, sep="")
    if log:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
    else:
        axis.set_major_locator(MaxNLocator(nbins=5, min_n_ticks=2))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())
