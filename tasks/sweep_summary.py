"""Turn a multirun folder into a report: summary.md, summary.csv and PNG plots (``scripts/summarize.py``).

Every job folder (``<multirun>/<job number>/``) is read on its own: ``.hydra/overrides.yaml`` (what the job
changed), ``.hydra/hydra.yaml`` (where and how it was launched) and ``metrics.json`` (status, objective, final
metrics, W&B run). Jobs without ``metrics.json`` are *unfinished* (still running or killed); jobs whose status
is ``failed`` or whose objective is NaN are listed with their error instead of being ranked. The swept
parameters are the override keys whose values differ between jobs. matplotlib is imported only to plot.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experiment_utils.atomic import atomic_write, atomic_write_text
from experiment_utils.errors import UserError
from tasks.pareto import plot_pareto

METRICS_FILE = "metrics.json"
TRAINABLE_KEY = "model/params_trainable"
LOG_SCALE_PARAMS = re.compile(r"(^|[._/])(lr|learning_rate|weight_decay|wd|eps)$")
# x-axis descriptions of common parameters: (last key part) -> label with unit
PARAM_LABELS = {
    "lr": "learning rate",
    "learning_rate": "learning rate",
    "weight_decay": "weight decay",
    "sigma": "noise σ (0-255 scale)",
    "width": "width (channels per layer)",
    "depth": "depth (layers)",
    "rank": "LoRA rank",
    "batch_size": "batch size (images per device)",
    "max_epochs": "epochs",
    "patch_size": "patch size (pixels)",
}


@dataclass
class Job:
    """One job folder of a sweep and what it recorded."""

    name: str
    path: Path
    status: str  # completed | pruned | failed | unfinished
    overrides: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    metric: str | None = None
    mode: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float | None = None
    wandb: dict[str, Any] | None = None
    script: str = "scripts/train.py"

    @property
    def rankable(self) -> bool:
        """True when the job has a finite objective value and can be compared with the others."""
        return self.status in ("completed", "pruned") and self.objective is not None

    def command(self) -> str:
        """The command line that re-runs exactly this job as a single run (hydra.* overrides left out)."""
        args = [o for o in self.overrides if not o.lstrip("+~").startswith("hydra.")]
        return " ".join(["python", shlex.quote(self.script), *(shlex.quote(a) for a in args)])


@dataclass
class SweepSummary:
    """The jobs of a sweep, ranked by the objective, and the files written about them."""

    root: Path
    jobs: list[Job]
    metric: str | None
    mode: str
    swept: list[str]
    fixed: list[str]
    files: list[Path] = field(default_factory=list)
    optuna: dict[str, Any] | None = None

    @property
    def ranked(self) -> list[Job]:
        """Jobs with an objective value, best first."""
        jobs = [j for j in self.jobs if j.rankable]
        return sorted(jobs, key=lambda j: float(j.objective or 0.0), reverse=self.mode == "max")

    @property
    def not_ranked(self) -> list[Job]:
        """Failed and unfinished jobs (and completed jobs without an objective value)."""
        return [j for j in self.jobs if not j.rankable]

    @property
    def best(self) -> Job | None:
        """The job with the best objective value, or None when no job finished."""
        ranked = self.ranked
        return ranked[0] if ranked else None


def parse_value(text: str) -> Any:
    """An override value as a number when it is one (``1e-3`` -> 0.001, ``32`` -> 32), else the text."""
    lowered = text.strip().lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def split_override(override: str) -> tuple[str, str]:
    """``key=value`` -> (key, value); ``+key=value``/``++key=value`` keep their key, ``~key`` has value ''."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _script_of(job_dir: Path) -> str:
    """``scripts/<job name>.py`` relative to the launch folder when it can be found, else that short form."""
    saved = _read_yaml(job_dir / ".hydra" / "hydra.yaml")
    hydra = (saved.get("hydra") if isinstance(saved, dict) else None) or {}
    name = (hydra.get("job") or {}).get("name") or "train"
    name = re.sub(r"_ddp_rank\d+$", "", name)
    cwd = (hydra.get("runtime") or {}).get("cwd")
    for source in (hydra.get("runtime") or {}).get("config_sources") or []:
        if source.get("provider") == "main" and source.get("schema") == "file":
            script = Path(source["path"]).parent / "scripts" / f"{name}.py"
            if script.is_file():
                try:
                    return str(script.relative_to(cwd)) if cwd else str(script)
                except ValueError:
                    return str(script)
    return f"scripts/{name}.py"


def load_job(job_dir: Path) -> Job:
    """Read one job folder; never raises for missing or broken files (the job is then failed/unfinished)."""
    overrides = _read_yaml(job_dir / ".hydra" / "overrides.yaml") or []
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    job = Job(name=job_dir.name, path=job_dir, status="unfinished", overrides=overrides)
    job.params = {k: parse_value(v) for k, v in map(split_override, overrides) if not k.startswith("hydra.")}
    job.script = _script_of(job_dir)
    metrics_path = job_dir / METRICS_FILE
    if not metrics_path.is_file():
        job.error = "no metrics.json: still running, or killed before it finished"
        return job
    try:
        record = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as exc:
        job.status, job.error = "failed", f"unreadable metrics.json ({exc})"
        return job
    job.status = str(record.get("status") or "failed")
    job.error = record.get("error")
    job.metrics = dict(record.get("metrics") or {})
    job.duration_s = record.get("duration_s")
    job.wandb = record.get("wandb")
    objective = record.get("objective") or {}
    job.metric, job.mode = objective.get("metric"), objective.get("mode")
    job.objective = _finite(objective.get("best"))
    if job.status == "completed" and "optuna/pruned_at_epoch" in job.metrics:
        job.status = "pruned"
    if job.status in ("completed", "pruned") and job.objective is None:
        job.error = job.error or f"objective {job.metric} is not a finite number"
    return job


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _job_sort_key(path: Path) -> tuple[int, Any]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_job_dirs(root: Path) -> list[Path]:
    """Job folders right below ``root`` (with ``.hydra/`` or ``metrics.json``), or ``root`` itself."""
    if (root / ".hydra").is_dir() or (root / METRICS_FILE).is_file():
        return [root]
    jobs = [
        p for p in root.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / METRICS_FILE).is_file())
    ]
    return sorted(jobs, key=_job_sort_key)


def collect(root: str | Path, metric: str | None = None, mode: str | None = None) -> SweepSummary:
    """Read every job of the sweep in ``root``; ``metric``/``mode`` replace the jobs' own objective."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"{root} is not a folder: pass a multirun folder such as outputs/train/multiruns/<time>"
        )
    dirs = find_job_dirs(root)
    if not dirs:
        raise UserError(f"no job folders (with .hydra/ or metrics.json) in {root}: pass a multirun folder")
    jobs = [load_job(d) for d in dirs]
    if metric is not None:
        for job in jobs:
            job.metric = metric
            if job.status in ("completed", "pruned"):
                job.objective = _finite(job.metrics.get(metric))
                job.error = None if job.objective is not None else f"no finite value of {metric}"
            else:
                job.objective = None
    metric = metric or _most_common([j.metric for j in jobs])
    mode = mode or _most_common([j.mode for j in jobs]) or "max"
    if mode not in ("min", "max"):
        raise UserError(f"mode must be min or max, got {mode!r}")
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.params if k not in keys]
    swept = [k for k in keys if len({repr(j.params.get(k)) for j in jobs}) > 1]
    fixed = [k for k in keys if k not in swept]
    optuna = _read_yaml(root / "optimization_results.yaml")
    return SweepSummary(
        root, jobs, metric, mode, swept, fixed, optuna=optuna if isinstance(optuna, dict) else None
    )


def _most_common(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


# ---------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """Compact, table-friendly text for a value (4 significant digits for floats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return (
            f"{value:.4g}" if abs(value) < 1 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def metric_label(metric: str | None, mode: str | None = None) -> str:
    """Axis label of a metric with its unit and which way is better."""
    if not metric:
        return "objective"
    leaf = metric.split("/")[-1]
    unit = ""
    if "psnr" in leaf:
        unit = " (dB)"
    elif "acc" in leaf or "ssim" in leaf:
        unit = " (0-1)"
    better = {"max": ", higher is better", "min": ", lower is better"}.get(mode or "", "")
    return f"{metric}{unit}{better}"


def param_label(name: str, log_scale: bool) -> str:
    """Axis label of a swept parameter: its key, a plain description with unit, and the scale."""
    leaf = name.split(".")[-1]
    described = PARAM_LABELS.get(leaf)
    label = f"{name} — {described}" if described else name
    return f"{label} (log scale)" if log_scale else label


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def use_log_scale(name: str, values: list[Any]) -> bool:
    """Log x-axis for learning rates / weight decays, and for positive numbers spanning two decades."""
    if not values or not _numeric(values) or min(values) <= 0:
        return False
    return bool(LOG_SCALE_PARAMS.search(name)) or max(values) / min(values) >= 100


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
    values = {k: _finite(v) for k, v in best.metrics.items() if k.startswith(PER_CLASS_PREFIX)}
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


def markdown(summary: SweepSummary, plots: list[Path], per_class_top: int = PER_CLASS_TOP) -> str:
    """summary.md: headline, best job and its command, the ranked table, failed jobs, plots."""
    jobs, best = summary.jobs, summary.best
    counts = Counter(j.status for j in jobs)
    lines = [f"# Sweep summary: {summary.root.name}", ""]
    lines.append(f"Folder: `{summary.root}`  ")
    lines.append(f"Objective: **{summary.metric}** ({summary.mode})  ")
    count_text = ", ".join(
        f"{counts[s]} {s}" for s in ("completed", "pruned", "failed", "unfinished") if counts[s]
    )
    lines.append(f"Jobs: {len(jobs)} ({count_text})  ")
    lines.append(f"Swept: {', '.join(f'`{k}`' for k in summary.swept) or '(nothing differs between jobs)'}")
    lines.append("")
    if best is not None:
        lines += [
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
        lines += ["**No job finished with an objective value.**", ""]
    if summary.optuna and "best_value" in summary.optuna:
        lines += [
            "Optuna study best (including trials of earlier, continued runs): "
            f"{fmt(summary.optuna['best_value'])} "
            f"with {summary.optuna.get('best_params')}",
            "",
        ]
    extras = extra_metrics(summary, per_class_top)
    has_params = any(TRAINABLE_KEY in j.metrics for j in summary.ranked)
    header = ["rank", "job", "status", summary.metric or "objective", *summary.swept, *extras]
    header += (["trainable params"] if has_params else []) + ["time (s)", "W&B run"]
    lines += ["## Jobs ranked by the objective", ""]
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
    if summary.not_ranked:
        lines += ["", "## Failed and unfinished jobs", ""]
        lines += [
            "| job | status | " + " | ".join(summary.swept) + (" | " if summary.swept else "") + "error |"
        ]
        lines += ["|" + "---|" * (3 + len(summary.swept))]
        for job in summary.not_ranked:
            error = (job.error or "").replace("|", "\\|").replace("\n", " ")[:300]
            params = [fmt(job.params.get(k)) for k in summary.swept]
            lines.append("| " + " | ".join([job.name, job.status, *params, error]) + " |")
    if summary.fixed:
        lines += ["", "## Same in every job", ""]
        first = {split_override(o)[0]: o for o in summary.jobs[0].overrides}
        lines += [f"- `{first[k]}`" for k in summary.fixed if k in first]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            rel = plot.relative_to(summary.root) if plot.is_relative_to(summary.root) else plot
            lines += [f"![{plot.stem}]({rel.as_posix()})", ""]
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


# ---------------------------------------------------------------- plots


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def _scatter(
    ax: Any, xs: list[Any], ys: list[float], jobs: list[Job], best: str | None, color_by: str | None = None
) -> None:
    """Points labelled with their job names, the best one starred, coloured by ``color_by``'s value."""
    groups = [fmt(j.params.get(color_by)) for j in jobs] if color_by else [""] * len(jobs)
    for group in sorted(
        dict.fromkeys(groups), key=lambda g: (not _numeric([parse_value(g)]), parse_value(g), g)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ranked, best = summary.ranked, summary.best
    not_shown = len(summary.jobs) - len(ranked)
    for name in summary.swept:
        values = [j.params.get(name) for j in ranked]
        if not ranked:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        numeric = _numeric(values)
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
        paths.append(_save(fig, out_dir / f"objective_vs_{_safe_name(name)}.png"))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_keys = [k for k in ("test/acc", "val/acc", "val/acc_best") if any(k in j.metrics for j in jobs)]
    if summary.metric and "acc" in summary.metric.split("/")[-1]:
        acc_keys = [summary.metric, *acc_keys]
    y_key = acc_keys[0] if acc_keys else None
    ys = [j.objective if y_key in (None, summary.metric) else _finite(j.metrics.get(y_key)) for j in jobs]
    pairs = [(j, y) for j, y in zip(jobs, ys, strict=True) if y is not None]
    if not pairs:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    return [_save(fig, out_dir / f"{what}_vs_trainable_params.png")]


def _readable_count_axis(axis: Any, log: bool) -> None:
    """Parameter counts as 75k / 1.2M, at most 6 labels, no minor-tick labels: labels that never overlap."""
    from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter

    formatter = EngFormatter(places=0, sep="")
    if log:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
    else:
        axis.set_major_locator(MaxNLocator(nbins=5, min_n_ticks=2))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------- entry point


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
