"""Read a multirun folder into jobs: what each job changed, how it ended and what it measured.

Every job folder (``<multirun>/<job number>/``) is read on its own: ``.hydra/overrides.yaml`` (what the job
changed), ``.hydra/hydra.yaml`` (where and how it was launched) and ``metrics.json`` (status, objective, final
metrics, W&B run). Jobs without ``metrics.json`` are *unfinished* (still running or killed); jobs whose status
is ``failed`` or whose objective is NaN are listed with their error instead of being ranked. The swept
parameters are the override keys whose values differ between jobs.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imagelab.core.constants import METRICS_FILE
from imagelab.core.errors import UserError

TRAINABLE_KEY = "model/params_trainable"


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
    job.objective = finite(objective.get("best"))
    if job.status == "completed" and "optuna/pruned_at_epoch" in job.metrics:
        job.status = "pruned"
    if job.status in ("completed", "pruned") and job.objective is None:
        job.error = job.error or f"objective {job.metric} is not a finite number"
    return job


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
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
                job.objective = finite(job.metrics.get(metric))
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
