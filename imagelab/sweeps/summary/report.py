"""summary.md, summary.csv and what ``scripts/summarize.py`` prints; ``write_summary`` writes them with the plots."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from imagelab.core.atomic import atomic_write_text
from imagelab.sweeps.summary.collect import TRAINABLE_KEY, Job, SweepSummary, collect, finite, split_override
from imagelab.sweeps.summary.labels import fmt
from imagelab.sweeps.summary.pareto import plot_pareto
from imagelab.sweeps.summary.plots import plot_accuracy_vs_trainable, plot_objective_vs_params


def _wandb_cell(job: Job) -> str:
    info = job.wandb or {}
    if not info.get("id"):
        return ""
    return f"[{info['id']}]({info['url']})" if info.get("url") else f"{info['id']} ({info.get('mode', '')})"


PER_CLASS_PREFIX = "test/acc_class/"
PER_CLASS_TOP = 5  # per-class columns in summary.md (all of them are in summary.csv)


def worst_classes(summary: SweepSummary, n: int = PER_CLASS_TOP) -> list[str]:
    """The ``n`` per-class accuracy keys with the lowest value in the best job (the classes to watch)."""
    best = summary.best
    if best is None or n <= 0:
        return []
    values = {k: finite(v) for k, v in best.metrics.items() if k.startswith(PER_CLASS_PREFIX)}
    scored = {k: v for k, v in values.items() if v is not None}
    return sorted(scored, key=lambda k: (scored[k], k))[:n]


def extra_metrics(summary: SweepSummary, per_class_top: int = PER_CLASS_TOP) -> list[str]:
    """Test metrics (not losses) to show next to the objective, in a stable order; of the per-class
    accuracies only the ``per_class_top`` worst classes of the best job (a CIFAR-100 sweep has 100)."""
    keys: list[str] = []
    for job in summary.ranked:
        keys += [
            k
            for k in job.metrics
            if k.startswith("test/")
            and not k.endswith("loss")
            and not k.startswith(PER_CLASS_PREFIX)
            and k not in keys
        ]
    return sorted(k for k in keys if k != summary.metric) + worst_classes(summary, per_class_top)


def _headline(summary: SweepSummary) -> list[str]:
    """Folder, objective, job counts by status and the swept keys."""
    counts = Counter(j.status for j in summary.jobs)
    count_text = ", ".join(
        f"{counts[s]} {s}" for s in ("completed", "pruned", "failed", "unfinished") if counts[s]
    )
    return [
        f"# Sweep summary: {summary.root.name}",
        "",
        f"Folder: `{summary.root}`  ",
        f"Objective: **{summary.metric}** ({summary.mode})  ",
        f"Jobs: {len(summary.jobs)} ({count_text})  ",
        f"Swept: {', '.join(f'`{k}`' for k in summary.swept) or '(nothing differs between jobs)'}",
        "",
    ]


def _best_job(summary: SweepSummary) -> list[str]:
    """The best job, its value and the command that reproduces it; the Optuna study's best when there is one."""
    best = summary.best
    if best is not None:
        lines = [
            f"**Best job: {best.name}** — {summary.metric} = {fmt(best.objective)} (`{best.path}`)",
            "",
            "Reproduce it:",
            "",
            "```bash",
            best.command(),
            "```",
            "",
        ]
    else:
        lines = ["**No job finished with an objective value.**", ""]
    if summary.optuna and "best_value" in summary.optuna:
        lines += [
            "Optuna study best (including trials of earlier, continued runs): "
            f"{fmt(summary.optuna['best_value'])} "
            f"with {summary.optuna.get('best_params')}",
            "",
        ]
    return lines


def _ranked_table(summary: SweepSummary, per_class_top: int) -> list[str]:
    """The finished jobs by objective: swept values, test metrics, trainable parameters, time, W&B run."""
    extras = extra_metrics(summary, per_class_top)
    has_params = any(TRAINABLE_KEY in j.metrics for j in summary.ranked)
    header = ["rank", "job", "status", summary.metric or "objective", *summary.swept, *extras]
    header += (["trainable params"] if has_params else []) + ["time (s)", "W&B run"]
    lines = ["## Jobs ranked by the objective", ""]
    n_classes = len({k for j in summary.ranked for k in j.metrics if k.startswith(PER_CLASS_PREFIX)})
    shown = sum(k.startswith(PER_CLASS_PREFIX) for k in extras)
    if n_classes > shown:
        lines += [
            f"Per-class accuracy: the {shown} worst classes of the best job; all {n_classes} in summary.csv.",
            "",
        ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, job in enumerate(summary.ranked, 1):
        row = [str(rank), job.name, job.status, fmt(job.objective)]
        row += [fmt(job.params.get(k)) for k in summary.swept]
        row += [fmt(job.metrics.get(k)) for k in extras]
        row += [fmt(job.metrics.get(TRAINABLE_KEY))] if has_params else []
        row += [fmt(job.duration_s), _wandb_cell(job)]
        lines.append("| " + " | ".join(row) + " |")
    if not summary.ranked:
        lines.append("| " + " | ".join([""] * len(header)) + " |")
    return lines


def _not_ranked_table(summary: SweepSummary) -> list[str]:
    """Failed and unfinished jobs with their swept values and first error line."""
    if not summary.not_ranked:
        return []
    lines = ["", "## Failed and unfinished jobs", ""]
    lines += ["| job | status | " + " | ".join(summary.swept) + (" | " if summary.swept else "") + "error |"]
    lines += ["|" + "---|" * (3 + len(summary.swept))]
    for job in summary.not_ranked:
        error = (job.error or "").replace("|", "\\|").replace("\n", " ")[:300]
        params = [fmt(job.params.get(k)) for k in summary.swept]
        lines.append("| " + " | ".join([job.name, job.status, *params, error]) + " |")
    return lines


def _fixed_and_plots(summary: SweepSummary, plots: list[Path]) -> list[str]:
    """The overrides every job shares, then the plots (paths relative to the sweep folder)."""
    lines: list[str] = []
    if summary.fixed:
        lines += ["", "## Same in every job", ""]
        first = {split_override(o)[0]: o for o in summary.jobs[0].overrides}
        lines += [f"- `{first[k]}`" for k in summary.fixed if k in first]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            rel = plot.relative_to(summary.root) if plot.is_relative_to(summary.root) else plot
            lines += [f"![{plot.stem}]({rel.as_posix()})", ""]
    return lines


def markdown(summary: SweepSummary, plots: list[Path], per_class_top: int = PER_CLASS_TOP) -> str:
    """summary.md: headline, best job and its command, the ranked table, failed jobs, plots."""
    lines = _headline(summary) + _best_job(summary) + _ranked_table(summary, per_class_top)
    lines += _not_ranked_table(summary) + _fixed_and_plots(summary, plots)
    return "\n".join(lines).rstrip() + "\n"


def csv_text(summary: SweepSummary) -> str:
    """summary.csv: one row per job (ranked first, then the others) with parameters and all final metrics."""
    metric_keys = sorted({k for j in summary.jobs for k in j.metrics})
    header = ["rank", "job", "status", "objective_metric", "objective", *summary.swept, *metric_keys]
    header += ["duration_s", "wandb_id", "output_dir", "command", "error"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    ranked = summary.ranked
    for job in ranked + summary.not_ranked:
        rank = ranked.index(job) + 1 if job in ranked else ""
        row = [rank, job.name, job.status, summary.metric, job.objective]
        row += [job.params.get(k) for k in summary.swept] + [job.metrics.get(k) for k in metric_keys]
        row += [job.duration_s, (job.wandb or {}).get("id"), str(job.path), job.command(), job.error]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def write_summary(
    root: str | Path,
    out_dir: str | Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
    per_class_top: int = PER_CLASS_TOP,
) -> SweepSummary:
    """Collect the sweep in ``root`` and write summary.md, summary.csv and plots/*.png into ``out_dir``
    (default: ``root``); summary.md shows ``per_class_top`` per-class columns. Returns the summary with the
    written files in ``files``."""
    summary = collect(root, metric=metric, mode=mode)
    out = Path(out_dir) if out_dir is not None else summary.root
    plots_dir = out / "plots"
    plots = plot_objective_vs_params(summary, plots_dir) + plot_accuracy_vs_trainable(summary, plots_dir)
    plots += plot_pareto(summary.jobs, plots_dir)  # multi-objective sweeps (objective.also)
    md = atomic_write_text(out / "summary.md", markdown(summary, plots, per_class_top))
    table = atomic_write_text(out / "summary.csv", csv_text(summary))
    summary.files = [md, table, *plots]
    return summary


def report_lines(summary: SweepSummary) -> list[str]:
    """What scripts/summarize.py prints: counts, the best job and its command, failures, written files."""
    counts = Counter(j.status for j in summary.jobs)
    lines = [
        f"{len(summary.jobs)} jobs in {summary.root}: "
        + ", ".join(f"{counts[s]} {s}" for s in ("completed", "pruned", "failed", "unfinished") if counts[s])
    ]
    best = summary.best
    if best is not None:
        lines.append(
            f"best job: {best.name} ({best.path}): {summary.metric} = {fmt(best.objective)} ({summary.mode})"
        )
        lines.append(f"reproduce: {best.command()}")
    else:
        lines.append("no job finished with an objective value")
    for job in summary.not_ranked:
        lines.append(f"{job.status} job {job.name}: {job.error or ''}".rstrip())
    lines.append("wrote: " + ", ".join(str(p) for p in summary.files))
    return lines
