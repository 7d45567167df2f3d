"""Hydra callbacks that make sweeps work (``hydra.callbacks`` in conf/hydra/default.yaml); light imports."""

from __future__ import annotations

import copy
import json
import multiprocessing
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from imagelab.core.constants import HYDRA_DIR, METRICS_FILE
from imagelab.sweeps.optuna_search import pass_trial_numbers_to_jobs, tolerate_no_completed_trial
from imagelab.tracking.console import say


class HydraConfigInSweeper(Callback):
    """Make ``${hydra:...}`` resolvable in the sweeper and launcher process of a ``-m`` run.

    Hydra sets ``HydraConfig`` only inside each job, but the sweeper resolves ``hydra.sweep.dir`` (and the
    Optuna sweeper its storage path) before any job starts. Ours interpolate ``paths.log_dir``, whose root is
    ``${hydra:runtime.cwd}``; without this callback every multirun stops with "HydraConfig was not set".
    A copy of the config is registered so the sweeper's own config does not become read-only.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Register the multirun's config as the current Hydra config before the sweeper is built."""
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(copy.deepcopy(config))


class DataLoaderWorkersInJoblib(Callback):
    """Let jobs of ``hydra/launcher=joblib`` use data-loader worker processes (``data.num_workers > 0``).

    joblib's loky workers make ``loky`` the default multiprocessing start method of their process; PyTorch's
    DataLoader then starts plain ``multiprocessing.Process`` workers through loky's launcher, which fails with
    "'Process' object has no attribute 'env'". Before each job in such a worker, the platform's own default
    start method (fork on Linux, spawn on macOS) is restored for that worker process only.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Restore the platform's start method when this job runs inside a loky worker."""
        if multiprocessing.get_start_method(allow_none=True) == "loky":
            multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)


class OptunaTrialNumbers(Callback):
    """Make an Optuna sweeper hand each job the number of its trial, so that the job's pruning callback
    reports to exactly that trial (``optuna_search.find_running_trial``), whatever the launcher."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Patch the Optuna sweeper (in the sweeper's process) before it asks its first trials."""
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            pass_trial_numbers_to_jobs()


def _job_outcomes(sweep_dir: Path) -> list[tuple[Path, str, str]]:
    """``(job folder, status, error)`` for each job folder of a multirun (``metrics.json`` is the record)."""
    outcomes = []
    for job in sorted((p for p in sweep_dir.iterdir() if (p / HYDRA_DIR).is_dir()), key=lambda p: p.name):
        try:
            record = json.loads((job / METRICS_FILE).read_text())
            outcomes.append((job, str(record.get("status")), str(record.get("error") or "")))
        except (OSError, ValueError):
            outcomes.append(
                (job, "failed", f"no readable {METRICS_FILE}: the job died before it could write one")
            )
    return outcomes


class FailedJobsReport(Callback):
    """At the end of a ``-m`` run, list the jobs that did not complete and exit with status 1 if there are any.

    Each failed job is recorded and the sweep goes on (so one bad point does not end a search), but the
    sweep as a whole must not exit 0 when jobs failed. An Optuna search in which no trial completed ends
    with this report too (the sweeper itself would fail looking for a best trial that does not exist).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Let an Optuna search without any completed trial end with this report instead of a traceback."""
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            tolerate_no_completed_trial()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print how many jobs failed and where their errors are; exit 1 when any failed."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        outcomes = _job_outcomes(sweep_dir)
        failed = [o for o in outcomes if o[1] != "completed"]
        if not failed:
            return
        lines = [f"error: {len(failed)} of {len(outcomes)} jobs did not complete (sweep folder {sweep_dir}):"]
        for job, status, error in failed[:10]:
            lines.append(
                f"  {job.name}: {status}: {error.splitlines()[0] if error else '-'} ({job / METRICS_FILE})"
            )
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more: python scripts/summarize.py {sweep_dir}")
        say(*lines, err=True)
        raise SystemExit(1)
