"""The task wrapper every entry point runs through: honest statuses and exit codes, W&B always closed."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from imagelab.config.config_check import check_config
from imagelab.core.atomic import atomic_write_json
from imagelab.core.code_version import record_code_version
from imagelab.core.constants import METRICS_FILE
from imagelab.core.distributed import env_rank
from imagelab.core.errors import RunInterrupted, TrainingDiverged, UserError, first_line
from imagelab.core.hydra_job import in_multirun
from imagelab.core.requeue import requeue_slurm_job, slurm_job_id
from imagelab.core.signals import REQUEUE_SIGNAL, STATE, install_signal_handlers, sigterm_exception_signal
from imagelab.tasks.ddp_launch import release_distributed_job
from imagelab.tasks.lost_rank import EXIT_LOST_RANK, RankLost, lost_rank_error, lost_rank_message, lost_ranks
from imagelab.tasks.lost_rank import configure as configure_lost_rank_watch
from imagelab.tasks.resume import set_aside_failed_resume, state_dict_mismatch
from imagelab.tracking.console import prepare_console, print_results
from imagelab.tracking.wandb_fallback import offline_fallback
from imagelab.tracking.wandb_files import attach_run_files

log = logging.getLogger(__name__)


def _run_info(run: Any) -> dict[str, Any]:
    info = {"id": run.id, "name": run.name, "project": run.project, "group": run.group}
    info["mode"] = str(run.settings.mode)
    info["url"] = None if info["mode"] == "offline" else getattr(run, "url", None)  # offline: a warning
    info["run_dir"] = str(Path(run.dir).parent)
    return info


def _wandb_info(loggers: list[Any]) -> dict[str, Any] | None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            info = _run_info(logger.experiment)
            if offline_fallback(logger):  # online was asked for, the server did not answer
                info["offline_fallback"] = offline_fallback(logger)
            return info
    return None


def _active_wandb_info() -> dict[str, Any] | None:
    """The W&B run a failed job had already started (so its metrics.json still links to it), if any."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    try:
        return _run_info(run) if run is not None else None
    except Exception:  # a half-initialised run must not hide the job's own error
        return None


def finish_wandb(exit_code: int = 0, preempted: bool = False) -> None:
    """Close the active W&B run, if any, so that the next job of a sweep starts a run of its own.

    A non-zero ``exit_code`` marks the run failed; ``preempted`` (a signal) also marks it preempting, so W&B
    shows it as preempted and a resumed run continues it.
    """
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    if preempted:
        with contextlib.suppress(Exception):
            run.mark_preempting()
    wandb.finish(exit_code=exit_code)


EXIT_CRASH = 1  # an unexpected error (a bug): traceback shown
EXIT_USER_ERROR = 2  # bad config, data, checkpoint or environment (disk full): one line
EXIT_DIVERGED = 3  # the loss or the weights became NaN/inf


def _first_error(exc: BaseException) -> BaseException:
    """The error a run should report: an error raised while handling ours (e.g. in teardown) never masks it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError | TrainingDiverged | RunInterrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


def _disk_full_error(exc: BaseException) -> UserError | None:
    """A one-line UserError for 'no space left on device' anywhere in the exception chain, else None."""
    current: BaseException | None = exc
    for _ in range(20):
        if current is None:
            return None
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" while writing {current.filename}" if current.filename else ""
            return UserError(
                f"no space left on device{where}: free some space or set paths.log_dir elsewhere"
            )
        current = current.__cause__ or current.__context__
    return None


def _classify(exc: BaseException) -> tuple[str, int, BaseException]:
    """(status, exit code, the error to report) for an exception that ended a task."""
    if lost_ranks():  # a DDP process died: a failed collective or srun's SIGTERM to the others follows
        return "failed", EXIT_LOST_RANK, RankLost(lost_rank_message())
    signum = sigterm_exception_signal(exc)
    if signum is None and isinstance(exc, KeyboardInterrupt | SystemExit):
        signum = STATE.signum  # e.g. Lightning's sys.exit(1) after a second Ctrl+C
    if signum is None and isinstance(exc, KeyboardInterrupt):
        signum = signal.SIGINT
    if signum is not None:
        interrupted = exc if isinstance(exc, RunInterrupted) else RunInterrupted(signum)
        return "interrupted", interrupted.exit_code, interrupted
    first = _first_error(exc)
    if isinstance(first, RunInterrupted):
        return "interrupted", first.exit_code, first
    if STATE.signum is not None and not isinstance(first, UserError | TrainingDiverged):
        # an error after a signal is its consequence (e.g. data-loader workers that Ctrl+C ended)
        interrupted = RunInterrupted(
            STATE.signum, f"({type(first).__name__} while stopping: {first_line(first)})"
        )
        return "interrupted", interrupted.exit_code, interrupted
    lost = lost_rank_error(exc)  # a collective failed because another DDP process died
    if lost is not None:
        return "failed", EXIT_LOST_RANK, lost
    environment_error = _disk_full_error(exc) or state_dict_mismatch(exc)  # one line, not a traceback
    if environment_error is not None:
        return "failed", EXIT_USER_ERROR, environment_error
    if isinstance(first, UserError):
        return "failed", EXIT_USER_ERROR, first
    if isinstance(first, TrainingDiverged):
        return "failed", EXIT_DIVERGED, first
    return "failed", EXIT_CRASH, first


def _previous_record(output_dir: Path | None) -> str | None:
    """The run folder's metrics.json as it was before this (resumed) job started, or None."""
    try:
        return (output_dir / METRICS_FILE).read_text() if output_dir else None
    except OSError:
        return None


def _hydra_output_subdir() -> str | None:
    """Where Hydra recorded this job's config inside the run folder (``.hydra/resume-<time>`` for a resume)."""
    try:
        return HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    except ValueError:
        return None


def _log_to_file_only(message: str) -> None:
    """Write ``message`` to the job's log file(s) without a second copy on the console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None))


def _write_record(output_dir: Path | None, record: dict[str, Any]) -> None:
    if output_dir is None:
        return
    try:
        atomic_write_json(output_dir / METRICS_FILE, record)
    except OSError as exc:  # e.g. the disk is full: say so, but keep the job's own error first
        print(f"error: could not write {output_dir / METRICS_FILE}: {first_line(exc)}", file=sys.stderr)


def _discard_empty_wandb_run(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """Remove the offline W&B run of a job that failed before its first training step; return what remains."""
    if not info or info.get("mode") != "offline" or not info.get("run_dir"):
        return info
    shutil.rmtree(info["run_dir"], ignore_errors=True)
    return None


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | list[float] | None:
    """Run ``task(cfg)`` and return its objective value (for sweepers).

    Exit codes (README, "Runs and failures"): 0 completed; 2 a user error (config, data, checkpoint, disk
    full: one ``error: ...`` line); 3 the loss or weights became NaN/inf; 4 a DDP process died (one line
    naming it, ``imagelab.tasks.lost_rank``); 128 + N interrupted by signal N
    (143 SIGTERM, 130 SIGINT), after ``last.ckpt`` was saved; 1 an unexpected error (with its traceback).
    Inside a multirun a failed job is recorded and the sweep goes on (the sweep itself exits non-zero at the
    end), but an interruption stops the sweep. The return value is the objective's best value, or None when
    the job failed or its objective is NaN/inf: the Optuna sweeper records None as a FAILED trial.

    ``metrics.json`` in the run directory says ``running`` from the start and then ``completed``, ``failed``
    or ``interrupted`` (with the error or signal), the git commit of the code and the W&B run. The W&B run
    is always closed (as failed for a failure, preempted for a signal); one that failed before its first
    training step is removed when offline, so no empty run is left behind.
    """
    started = time.time()
    output_dir = Path(cfg.paths.output_dir) if cfg.get("paths") and cfg.paths.get("output_dir") else None
    install_signal_handlers()
    is_zero = env_rank() == 0
    record: dict[str, Any] = {"task": cfg.get("task_name"), "status": "running", "error": None}
    record.update(started_at=round(started, 3), pid=os.getpid())
    result: dict[str, Any] = {}
    exit_code = 0
    previous_record = _previous_record(output_dir) if is_zero and cfg.get("resume") else None
    configure_lost_rank_watch(
        cfg.get("lost_rank_timeout_s"),
        lambda error: _write_record(output_dir, {**record, "status": "failed", "error": error}),
    )
    try:
        if is_zero:
            record["code"] = record_code_version(output_dir)
            _write_record(output_dir, record)
        check_config(cfg)  # a missing or mistyped value is reported before anything else is printed
        prepare_console(cfg)  # noise filters, one log line per event, the config tree
        result = task(cfg)
        record["status"] = "completed"
    except BaseException as exc:
        status, exit_code, error = _classify(exc)
        foreign = exit_code == EXIT_CRASH and not isinstance(exc, Exception)  # e.g. a SystemExit of a library
        record.update(
            status=status, error=str(error) if exit_code != EXIT_CRASH else f"{type(error).__name__}: {error}"
        )
        if isinstance(error, RunInterrupted):
            record["signal"] = error.signal_name
            record["last_checkpoint"] = STATE.saved_checkpoint
        if exit_code == EXIT_CRASH:
            log.error("job failed", exc_info=error)
        elif in_multirun():
            log.error("%s", error)
        else:
            _log_to_file_only(f"error: {error}")  # the console gets the one line printed below
        _finish(record, result, output_dir, started, exit_code, cfg)
        if is_zero and cfg.get("resume") and status == "failed" and STATE.trained_steps == 0 and output_dir:
            set_aside_failed_resume(output_dir, _hydra_output_subdir(), previous_record)
        if foreign:
            raise
        if exit_code == EXIT_CRASH and not in_multirun():
            if error is exc:
                raise
            raise error from None
        if isinstance(error, RunInterrupted):
            _print_interrupted(error, output_dir)
            if error.signum == REQUEUE_SIGNAL and slurm_job_id() and env_rank() == 0:
                print(requeue_slurm_job(), file=sys.stderr)  # SLURM's time warning or a preemption notice
            raise SystemExit(exit_code) from None
        if not in_multirun():
            if exit_code != EXIT_CRASH:
                print(f"error: {error}", file=sys.stderr)
            raise SystemExit(exit_code) from None
        return None
    _finish(record, result, output_dir, started, exit_code, cfg)
    objective = record.get("objective") or {}
    if objective.get("values") is not None:  # multi-objective (objective.also): one value per objective
        try:
            values = [float(v) for v in objective["values"]]
        except (TypeError, ValueError):
            return None
        return values if all(math.isfinite(v) for v in values) else None
    value = objective.get("best")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _finish(
    record: dict[str, Any],
    result: dict[str, Any],
    output_dir: Path | None,
    started: float,
    exit_code: int,
    cfg: DictConfig,
) -> None:
    """Write the final record, close the W&B run, release DDP state; print the summary of a completed run."""
    loggers = result.get("loggers", [])
    is_zero = result.get("is_global_zero", env_rank() == 0)
    completed = record["status"] == "completed"
    if is_zero:
        wandb_info = _wandb_info(loggers) if completed else _active_wandb_info()
        if not completed and STATE.trained_steps == 0 and record["status"] == "failed":
            finish_wandb(exit_code)
            wandb_info = _discard_empty_wandb_run(wandb_info)
        trainer = result.get("trainer")
        if trainer is not None:
            record["world_size"] = int(getattr(trainer, "world_size", 1))  # processes that trained together
        record.update(
            {k: result[k] for k in ("objective", "metrics", "best_checkpoint") if k in result},
            wandb=wandb_info,
            finished_at=round(time.time(), 3),
            duration_s=round(time.time() - started, 2),
        )
        _write_record(output_dir, record)
        if output_dir is not None:  # metrics.json and the resolved config, into the W&B run
            _wandb_call(completed, attach_run_files, output_dir, cfg)
    _wandb_call(completed, finish_wandb, exit_code, preempted=record["status"] == "interrupted")
    if in_multirun():
        release_distributed_job()
    if is_zero and completed:
        verbose = bool(cfg.get("verbose", False))
        print_results(record, output_dir, verbose=verbose, printed=result.get("printed_metrics"))


def _wandb_call(completed: bool, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``call(*args, **kwargs)``; for a job that did not complete, a W&B failure (e.g. SLURM ended W&B's
    service process together with the job's other processes) goes to the log file, after the job's own error."""
    if completed:
        call(*args, **kwargs)
        return
    try:
        call(*args, **kwargs)
    except Exception as exc:
        _log_to_file_only(f"could not close the W&B run: {type(exc).__name__}: {first_line(exc)}")
        wandb = sys.modules.get("wandb")
        if wandb is not None:  # drop the broken connection now, or W&B's exit hook prints its traceback
            with contextlib.suppress(Exception, SystemExit):
                wandb.teardown(1)


def _print_interrupted(error: RunInterrupted, output_dir: Path | None) -> None:
    saved = f"; last.ckpt saved to {STATE.saved_checkpoint}" if STATE.saved_checkpoint else ""
    again = f"; continue with: python scripts/train.py resume={output_dir}" if STATE.saved_checkpoint else ""
    print(f"interrupted: {error}{saved}{again}", file=sys.stderr)
