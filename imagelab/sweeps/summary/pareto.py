"""Pareto front of a multi-objective sweep (``objective.also``, e.g. ``hparams_search=classifier_nsga2``).

Each job's ``metrics.json`` records ``objective.metrics``, ``objective.modes`` and ``objective.values`` (one
value per objective). :func:`pareto_front` finds the non-dominated jobs; :func:`plot_pareto` draws the first
two objectives of every finished job with the front highlighted (``plots/pareto_front.png``) and
``scripts/summarize.py`` adds it to ``summary.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from matplotlib.ticker import NullFormatter

from imagelab.core.constants import METRICS_FILE
from imagelab.sweeps.summary.plots import new_axes, save_png


def dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, mode in zip(a, b, modes, strict=True):
        if mode == "max":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(points: list[list[float]], modes: list[str]) -> list[int]:
    """Indices of the non-dominated points (ties: every copy of a non-dominated point is on the front)."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, modes) for j, q in enumerate(points) if j != i)
    ]


def multi_objective_jobs(jobs: list[Any]) -> tuple[list[str], list[str], list[tuple[Any, list[float]]]]:
    """(metric names, modes, [(job, values)]) of the finished jobs that recorded several objective values."""
    names: list[str] = []
    modes: list[str] = []
    found = []
    for job in jobs:
        if job.status not in ("completed", "pruned"):
            continue
        path = Path(job.path) / METRICS_FILE
        try:
            objective = json.loads(path.read_text()).get("objective") or {}
        except (OSError, ValueError):
            continue
        values = objective.get("values")
        if not values or len(values) < 2:
            continue
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in floats):
            continue
        names, modes = list(objective.get("metrics") or []), list(objective.get("modes") or [])
        found.append((job, floats))
    return names, modes, found


def plot_pareto(jobs: list[Any], out_dir: Path) -> list[Path]:
    """``pareto_front.png``: first objective (y) against the second (x) for every job, the front joined
    and labelled; nothing when the sweep is single-objective."""
    names, modes, found = multi_objective_jobs(jobs)
    if len(found) < 2 or len(names) < 2:
        return []
    front = set(pareto_front([v for _, v in found], modes))
    fig, ax = new_axes()
    xs = [v[1] for _, v in found]
    ys = [v[0] for _, v in found]
    others = [i for i in range(len(found)) if i not in front]
    ax.scatter([xs[i] for i in others], [ys[i] for i in others], color="0.6", label="dominated")
    on_front = sorted(front, key=lambda i: xs[i])
    ax.plot([xs[i] for i in on_front], [ys[i] for i in on_front], "o-", color="C3", label="Pareto front")
    for i, (job, _) in enumerate(found):
        ax.annotate(str(job.name), (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # no overlapping minor labels
    ax.set_xlabel(f"{names[1]} ({'lower' if modes[1] == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{names[0]} ({'lower' if modes[0] == 'min' else 'higher'} is better)")
    ax.set_title(f"Pareto front: {len(front)} of {len(found)} jobs", fontsize=10)
    ax.legend(fontsize=8)
    return [save_png(fig, out_dir / "pareto_front.png")]
