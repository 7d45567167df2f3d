"""The task wrapper every entry point runs through: one-line user errors, W&B always closed, a metrics file."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiment_utils.atomic import atomic_write_json
from experiment_utils.console import prepare_console, print_results
from experiment_utils.errors import UserError
from experiment_utils.wandb_run import attach_run_files

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def in_multirun() -> bool:
    """True inside a Hydra ``-m`` job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def _run_info(run: Any) -> dict[str, Any]:
    info = {"id": run.id, "name": run.name, "project": run.project, "group": run.group}
    info["mode"] = str(run.settings.mode)
    info["url"] = None if info["mode"] == "offline" else getattr(run, "url", None)  # offline: a warning
    info["run_dir"] = str(Path(run.dir).parent)
    return info


def _wandb_info(loggers: list[Any]) -> dict[str, Any] | None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            return _run_info(logger.experiment)
    return None


def _active_wandb_info() -> dict[str, Any] | None:
    """The W&B run a failed job had already started (so its metrics.json still links to it), if any."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    try:
        return _run_info(run) if run is not None else None
    except Exception:  # a half-initialised run must not hide the job's own error
        return None


def _env_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def finish_wandb(exit_code: int = 0) -> None:
    """Close the active W&B run, if any, so that the next job of a sweep starts a run of its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | None:
    """Run ``task(cfg)`` and return its objective value (for sweepers).

    A UserError prints ``error: <message>`` and exits with status 2 (in a multirun the job is recorded as
    failed and the sweep goes on). Any other error is re-raised, except in a multirun. The return value is
    the objective's best value, or None when the job failed or its objective is NaN/inf: the Optuna sweeper
    records None as a FAILED trial and carries on, whereas a NaN return aborts its whole study (Optuna 2.10
    refuses NaN and the sweeper's error handling then fails too).
    Always: the W&B run is closed and ``metrics.json`` is written to the run directory by rank zero, with
    ``status`` completed or failed, start/end times and the process id. After a multirun job, its DDP
    process group and rank variables are released so the next job can start its own ranks.
    """
    started = time.time()
    output_dir = Path(cfg.paths.output_dir) if cfg.get("paths") and cfg.paths.get("output_dir") else None
    record: dict[str, Any] = {"task": cfg.get("task_name"), "status": "failed", "error": None}
    record.update(started_at=round(started, 3), pid=os.getpid())
    result: dict[str, Any] = {}
    exit_code = 1
    try:
        prepare_console(cfg)  # noise filters, one log line per event, the config tree
        result = task(cfg)
        record["status"] = "completed"
        exit_code = 0
    except UserError as exc:
        record["error"] = str(exc)
        log.error("%s", exc)
        if not in_multirun():
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        if not in_multirun():
            raise
        log.exception("job failed; the sweep goes on")
    finally:
        loggers = result.get("loggers", [])
        is_zero = result.get("is_global_zero", _env_rank() == 0)
        if is_zero:
            wandb_info = _wandb_info(loggers) if record["status"] == "completed" else _active_wandb_info()
            record.update(
                {k: result[k] for k in ("objective", "metrics", "best_checkpoint") if k in result},
                wandb=wandb_info,
                finished_at=round(time.time(), 3),
                duration_s=round(time.time() - started, 2),
            )
            if output_dir is not None:
                atomic_write_json(output_dir / METRICS_FILE, record)
                attach_run_files(output_dir, cfg)  # metrics.json and the resolved config, into the W&B run
        finish_wandb(exit_code)
        if in_multirun():
            from experiment_utils.ddp_launch import release_distributed_job

            release_distributed_job()
        if is_zero and record["status"] == "completed":
            print_results(record, output_dir, verbose=bool(cfg.get("verbose", False)))
    objective = record.get("objective") or {}
    value = objective.get("best")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
