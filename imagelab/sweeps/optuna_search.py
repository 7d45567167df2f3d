"""Optuna search support for ``hparams_search=*``: study storage, direction check, the job's running trial.

* :func:`sqlite_storage` builds ``hydra.sweeper.storage``: an Optuna RDB storage on a SQLite file that works
  with the installed Optuna 2.10 + SQLAlchemy 2 (a plain ``sqlite:///`` URL does not: Optuna's schema stamp
  is never committed and the database stays locked).
* :func:`check_sweeper_direction` stops a job whose ``objective.mode`` disagrees with the sweeper's direction.
* :func:`pass_trial_numbers_to_jobs` makes the sweeper tell every job its trial's number, and
  :func:`find_running_trial` opens that trial (for pruning) through the study storage, so it also works when
  the job runs in another process (joblib, SLURM) than the sweeper.

Nothing heavy at module scope: optuna (seconds to import) is imported inside the functions that need it,
because scripts/train.py imports this module (through imagelab.tasks.training and the resolvers) before it checks the
config, and only Optuna sweeps use it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from imagelab.core.errors import UserError

log = logging.getLogger(__name__)

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
CLAIM_ATTR = "output_dir"  # trial user attribute: the job folder that runs the trial
TRIAL_ENV = "IMAGELAB_OPTUNA_TRIAL"  # a job's environment: the number of the trial it evaluates


def storage_url(path: str) -> str:
    """SQLAlchemy URL of a study storage: ``path`` as given when it is a URL, else a SQLite file URL."""
    if "://" in path:
        return path
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def sqlite_storage(path: str) -> Any:
    """An Optuna ``RDBStorage`` on ``path`` (a file, created with its folder, or any SQLAlchemy URL, e.g.
    ``postgresql://user@host:port/db`` for a study shared by many machines; a password in the URL is refused).

    SQLite connections run in autocommit mode: with SQLAlchemy 2, Optuna 2.10 leaves its Alembic schema stamp
    in an open transaction, which locks the file for every later write. Reopening the same file with the same
    study name continues the study (``load_if_exists``).
    """
    from optuna.storages import RDBStorage  # lazy: optuna, see the module docstring

    url = storage_url(str(path))
    check_no_password(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # autocommit (see above); wait up to a minute for parallel jobs that write to the same file
        engine_kwargs = {"isolation_level": "AUTOCOMMIT", "connect_args": {"timeout": 60}}
    # Drivers that start together on a fresh server race to create Optuna's tables: the loser's CREATE fails
    # and a second try finds the tables. Three tries, a second apart.
    for attempt in range(3):
        try:
            if engine_kwargs:
                return RDBStorage(url, engine_kwargs=engine_kwargs)
            # A server database (PostgreSQL, MySQL): the schema and its stamp are set up in autocommit mode
            # (else the stamp is never committed, as with SQLite), then the study runs in transactions,
            # which Optuna needs to number trials uniquely (it locks the study row while adding a trial).
            RDBStorage(url, engine_kwargs={"isolation_level": "AUTOCOMMIT"}).engine.dispose()
            return RDBStorage(url)
        except Exception as exc:
            if attempt < 2 and not url.startswith("sqlite:///"):
                time.sleep(1.0)
                continue
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(
                f"cannot open the Optuna study storage {url} ({type(exc).__name__}: {first_line}); "
                "check hydra.sweeper.storage.path"
            ) from None
    raise AssertionError("unreachable")


def check_no_password(url: str) -> None:
    """Refuse a storage URL that holds a password: the sweep saves the URL in multirun.yaml and every job's
    .hydra/hydra.yaml (and W&B uploads them). The database client reads the password from ~/.pgpass or
    ``PGPASSWORD`` (PostgreSQL) instead."""
    from sqlalchemy.engine import make_url  # lazy: keeps --help fast

    try:
        password = make_url(url).password
    except Exception:
        return  # not a SQLAlchemy URL: RDBStorage says what is wrong with it
    if password:
        raise UserError(
            "the study storage URL holds a password, which the sweep would save in multirun.yaml and every "
            "job's .hydra/hydra.yaml: drop it from the URL and put it in ~/.pgpass or PGPASSWORD "
            "(docs/sweeps.md, 'One study shared by many machines')"
        )


def optuna_sweeper_config() -> DictConfig | None:
    """The ``hydra.sweeper`` node when the current job runs inside an Optuna ``-m`` sweep, else None."""
    try:
        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN or hc.sweeper.get("_target_") != OPTUNA_SWEEPER:
        return None
    return hc.sweeper


def _direction_name(direction: Any) -> str:
    return str(getattr(direction, "name", direction)).split(".")[-1].lower()


def check_sweeper_direction(mode: str, also: list[str] | None = None) -> None:
    """Raise UserError when an Optuna sweep optimises against ``objective.mode`` (max vs minimize), or, for a
    multi-objective sweep (a list of directions), against ``[objective.mode, *objective.also modes]``."""
    sweeper = optuna_sweeper_config()
    if sweeper is None:
        return
    direction = sweeper.get("direction")
    if OmegaConf.is_list(direction) or isinstance(direction, list | tuple):
        got = [_direction_name(d) for d in direction]
        want = ["maximize" if m == "max" else "minimize" for m in [mode, *(also or [])]]
        if got != want:
            raise UserError(
                f"hydra.sweeper.direction={got} but the objectives (objective.metric, then objective.also) "
                f"want {want}: give one direction per objective, in that order"
            )
        return
    expected = "maximize" if mode == "max" else "minimize"
    if _direction_name(direction) != expected:
        raise UserError(
            f"objective.mode={mode} but hydra.sweeper.direction={_direction_name(direction)}: "
            f"set hydra.sweeper.direction={expected} (or change objective.mode) so the search optimises "
            "the right way"
        )


def _sweeper_storage(sweeper: DictConfig) -> Any | None:
    node = sweeper.get("storage")
    if node is None:
        return None
    if isinstance(node, DictConfig):
        return instantiate(node)
    return sqlite_storage(str(node))


def _job_output_dir() -> str:
    return os.path.abspath(HydraConfig.get().runtime.output_dir)


def _job_trial_number() -> int | None:
    """The trial number the sweeper gave this job (``TRIAL_ENV``), or None when it gave none."""
    number = os.environ.get(TRIAL_ENV, "")
    return int(number) if number.isdigit() else None


def find_running_trial(pruner: Any = None) -> Any | None:
    """The Optuna trial the current job evaluates, opened through the sweeper's storage; else None.

    The sweeper hands every job the number of its trial (:func:`pass_trial_numbers_to_jobs`, as the job's
    environment variable ``TRIAL_ENV``), so the job opens exactly that trial of the study, also when other
    jobs or other sweep drivers sharing the study run trials with the same parameters. The job claims it with
    the user attribute ``output_dir`` (its folder). ``pruner`` decides ``trial.should_prune()`` here.
    """
    sweeper = optuna_sweeper_config()
    if sweeper is None:
        return None
    storage = _sweeper_storage(sweeper)
    if storage is None:
        log.warning("Optuna pruning needs a study storage (hydra.sweeper.storage): pruning is off")
        return None
    number = _job_trial_number()
    if number is None:
        log.warning("the sweeper gave this job no Optuna trial number (%s): pruning is off", TRIAL_ENV)
        return None
    import optuna  # lazy: see the module docstring
    from optuna.trial import TrialState

    names = [sweeper.get("study_name")] if sweeper.get("study_name") else None
    if names is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    found = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(name), number
            )
        except KeyError:
            continue
        if storage.get_trial(trial_id).state == TrialState.RUNNING:
            found.append(optuna.trial.Trial(study, trial_id))
    if len(found) != 1:
        log.warning(
            "%s running Optuna trials numbered %d in the study storage: pruning is off for this job",
            "no" if not found else f"{len(found)} (one per study; set hydra.sweeper.study_name)",
            number,
        )
        return None
    found[0].set_user_attr(CLAIM_ATTR, _job_output_dir())
    return found[0]


def pass_trial_numbers_to_jobs() -> None:
    """Make the Optuna sweeper hand every job the number of the trial it evaluates.

    hydra-optuna-sweeper 1.3 starts one job per trial with the trial's parameters as overrides, but nothing
    that names the trial. Each job's overrides get ``++hydra.job.env_set.<TRIAL_ENV>=<number>``: Hydra sets
    that environment variable while the job runs (in any launcher's process, also a SLURM job), and it stays
    out of the job's task overrides (run name, ``summarize.py``'s swept parameters, the reproduce command).
    """
    from hydra_plugins.hydra_optuna_sweeper import _impl  # lazy: imports optuna, see the module docstring

    original = _impl.OptunaSweeperImpl._configure_trials
    if getattr(original, "_passes_trial_numbers", False):
        return

    def _configure_trials(self: Any, trials: list[Any], *args: Any, **kwargs: Any) -> list[tuple[str, ...]]:
        overrides = original(self, trials, *args, **kwargs)
        return [
            (*job, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}")
            for job, trial in zip(overrides, trials, strict=True)
        ]

    _configure_trials._passes_trial_numbers = True  # type: ignore[attr-defined]
    _impl.OptunaSweeperImpl._configure_trials = _configure_trials


def tolerate_no_completed_trial() -> None:
    """Make the Optuna sweeper end quietly when no trial completed (all FAILED), instead of raising.

    hydra-optuna-sweeper 1.3 asks the study for its best trial after the last batch; with no completed trial
    Optuna raises "Record does not exist", which would hide the per-job errors. The failed jobs are then
    reported by ``hydra_callbacks.FailedJobsReport``, which also makes the sweep exit with status 1.
    """
    from hydra_plugins.hydra_optuna_sweeper import _impl  # lazy: imports optuna, see the module docstring

    original = _impl.OptunaSweeperImpl.sweep
    if getattr(original, "_tolerates_no_completed_trial", False):
        return

    def sweep(self: Any, arguments: list[str]) -> None:
        try:
            return original(self, arguments)
        except ValueError as exc:
            if "Record does not exist" not in str(exc):
                raise
            log.error("no trial of the Optuna study completed, so there is no best trial")
            return None

    sweep._tolerates_no_completed_trial = True  # type: ignore[attr-defined]
    _impl.OptunaSweeperImpl.sweep = sweep


def continued_sampler_seed(seed: int | None, storage_path: str | None, study_name: str | None) -> int | None:
    """The sampler seed for a study: ``seed`` for a new one, ``seed`` + its number of trials when continued.

    A continued search (``hydra.sweeper.storage.path=<old sweep>/optuna.db``) with the original seed would
    propose exactly the points it already tried; offsetting the seed by the trials done gives new ones while
    staying reproducible. Used as ``${optuna_seed:...}`` in the ``hparams_search`` presets.
    """
    if seed is None or not storage_path:
        return seed
    url = storage_url(str(storage_path))
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return int(seed)
    import optuna  # lazy: see the module docstring

    storage = sqlite_storage(str(storage_path))
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    summary = summaries.get(study_name) if study_name else next(iter(summaries.values()), None)
    done = summary.n_trials if summary is not None else 0
    if done:
        log.info(
            "continuing Optuna study %s from %d earlier trials (sampler seed %d + %d)",
            study_name,
            done,
            seed,
            done,
        )
    return int(seed) + done
