"""Optuna search (hparams_search=*): a failing trial does not stop it, a stored study continues, pruning."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from imagelab.core.errors import UserError
from imagelab.sweeps.optuna_search import (
    TRIAL_ENV,
    check_sweeper_direction,
    pass_trial_numbers_to_jobs,
    sqlite_storage,
)
from tests.helpers.compose import as_multirun, compose
from tests.helpers.overrides import sweep_denoise
from tests.helpers.runs import read_metrics, run_script, sweep_jobs

TINY = [*sweep_denoise("csv"), "model.net.depth=5"]


@pytest.fixture(autouse=True)
def _restore_hydra_config():
    """Tests here put Hydra into multirun mode; give the next test the Hydra state it had before."""
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = saved


def _load_study(db: Path, name: str = "denoiser_optuna"):
    import optuna

    return optuna.load_study(study_name=name, storage=sqlite_storage(str(db)))


def _new_study(db: Path):
    """An empty ``denoiser_optuna`` study (maximize) in the SQLite file ``db``."""
    import optuna

    return optuna.create_study(
        study_name="denoiser_optuna", storage=sqlite_storage(str(db)), direction="maximize"
    )


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("optuna")
    # width = job number: trial 0 gets width 0, which the network rejects -> that trial fails
    proc = run_script(
        "train.py",
        "-m",
        "hparams_search=denoiser_optuna",
        "hydra.sweeper.n_trials=3",
        *TINY,
        "model.net.width=${hydra:job.num}",
        cwd=root,
        check=False,
    )
    sweep = next((root / "outputs" / "train" / "multiruns").iterdir())
    return {"root": root, "sweep": sweep, "stdout": proc.stdout + proc.stderr, "returncode": proc.returncode}


@pytest.mark.slow
def test_search_survives_a_failing_trial_and_reports_the_best_of_the_others(search: dict) -> None:
    sweep = search["sweep"]
    jobs = sweep_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2"]
    # the search went on past the failed trial, but the sweep does not exit 0 and says which job failed
    assert search["returncode"] == 1
    assert (
        "1 of 3 jobs did not complete" in search["stdout"]
        and str(jobs[0] / "metrics.json") in search["stdout"]
    )
    failed = read_metrics(jobs[0])
    assert failed["status"] == "failed" and "width must be >= 1" in failed["error"]
    done = {j.name: read_metrics(j) for j in jobs[1:]}
    assert all(m["status"] == "completed" for m in done.values())
    best_job = max(done, key=lambda n: done[n]["objective"]["best"])

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(done[best_job]["objective"]["best"])
    overrides = yaml.safe_load((sweep / best_job / ".hydra" / "overrides.yaml").read_text())
    for name, value in results["best_params"].items():
        assert f"{name}={value}" in overrides

    study = _load_study(sweep / "optuna.db")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "alembic" not in search["stdout"]  # Optuna's storage migrations stay off the console
    for trial in study.trials[1:]:
        job = done[str(trial.number)]
        assert trial.value == pytest.approx(job["objective"]["best"])
        assert job["metrics"]["optuna/trial_number"] == trial.number  # the job found its own trial ...
        assert trial.intermediate_values == {0: pytest.approx(job["metrics"]["val/psnr"])}  # ... and reported
        assert trial.user_attrs["output_dir"] == str(
            sweep / str(trial.number)
        )  # in a fresh study trial k = job k
    for job in jobs:  # each job was told its trial's number, outside its task overrides
        hydra_overrides = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["overrides"]
        assert f"++hydra.job.env_set.{TRIAL_ENV}={job.name}" in hydra_overrides["hydra"]
        assert not any(TRIAL_ENV in o for o in hydra_overrides["task"])


@pytest.mark.slow
def test_continued_study_picks_up_the_stored_trials(search: dict) -> None:
    db = search["sweep"] / "optuna.db"
    before = _load_study(db)
    best_before = before.best_value
    proc = run_script(
        "train.py",
        "-m",
        "hparams_search=denoiser_optuna",
        "hydra.sweeper.n_trials=1",
        *TINY,
        "model.net.width=4",
        f"hydra.sweeper.storage.path={db}",
        cwd=search["root"],
    )
    assert "Using an existing study" in proc.stdout + proc.stderr
    sweeps = sorted((search["root"] / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2 and not (sweeps[1] / "optuna.db").exists()
    new_job = read_metrics(sweeps[1] / "0")
    assert new_job["status"] == "completed"
    assert new_job["metrics"]["optuna/trial_number"] == 3  # numbering continues after the 3 stored trials
    after = _load_study(db)
    assert [t.state.name for t in after.trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    # the continued study proposes a new point (the same sampler seed would repeat trial 0's parameters)
    assert "continuing Optuna study denoiser_optuna from 3 earlier trials" in proc.stdout + proc.stderr
    old_points = [{k: v for k, v in t.params.items() if k != "model.net.width"} for t in after.trials[:3]]
    assert {k: v for k, v in after.trials[3].params.items() if k != "model.net.width"} not in old_points
    results = yaml.safe_load((sweeps[1] / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(best_before, new_job["objective"]["best"]))


def test_sqlite_storage_creates_its_folder_and_reopens_the_study(tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "not" / "yet" / "there" / "study.db"
    study = optuna.create_study(study_name="s", storage=sqlite_storage(str(db)), direction="maximize")
    for value in (1.0, 3.0):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    again = optuna.create_study(
        study_name="s", storage=sqlite_storage(f"sqlite:///{db}"), direction="maximize", load_if_exists=True
    )
    assert [t.state.name for t in again.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert again.best_value == 3.0


def test_run_task_returns_none_for_failed_and_nan_jobs_in_a_multirun(tmp_path: Path) -> None:
    from imagelab.tasks.runner import run_task

    cfg = compose("train", ["logger=none"], output_dir=tmp_path)
    as_multirun(cfg)

    def boom(_cfg):
        raise RuntimeError("diverged")

    def objective(value: float):
        return lambda _cfg: {"objective": {"metric": "val/psnr", "mode": "max", "best": value}, "metrics": {}}

    assert run_task(boom, cfg) is None  # the Optuna sweeper records None as FAILED and goes on
    record = read_metrics(tmp_path)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: diverged"
    assert record["started_at"] <= record["finished_at"] and record["pid"] > 0
    assert run_task(objective(math.nan), cfg) is None  # a NaN return would abort the whole study
    assert run_task(objective(math.inf), cfg) is None
    assert run_task(objective(21.5), cfg) == 21.5


def test_sweeper_direction_must_match_the_objective_mode(tmp_path: Path) -> None:
    cfg = compose("train", ["hparams_search=denoiser_optuna"], output_dir=tmp_path)
    assert cfg.objective.mode == "max" and str(cfg.hydra.sweeper.direction) == "maximize"
    check_sweeper_direction("max")  # no multirun yet: nothing to check
    as_multirun(cfg)
    check_sweeper_direction("max")
    with pytest.raises(UserError, match=r"hydra\.sweeper\.direction=minimize"):
        check_sweeper_direction("min")


@pytest.mark.parametrize("choice", [["model=classifier", "data=digits"], ["experiment=digits_small_cnn"]])
def test_classifier_search_space_composes(choice: list[str], tmp_path: Path) -> None:
    cfg = compose("train", [*choice, "hparams_search=classifier_optuna"], output_dir=tmp_path)
    params = dict(cfg.hydra.sweeper.params)
    assert set(params) == {"model.optimizer.lr", "model.optimizer.weight_decay", "model.finetune.rank"}
    for key in params:  # every searched key exists in the composed classifier config
        assert OmegaConf.select(cfg, key) is not None, f"{key} is not in the classifier config"
    assert cfg.model.finetune._target_ == "lightning_modules.finetuning.LoRA"
    assert cfg.objective.metric == "val/acc" and str(cfg.hydra.sweeper.direction) == "maximize"
    if choice[0].startswith("experiment="):  # an experiment keeps its own model
        assert cfg.model.backbone == "small_cnn"


def _fake_trainer(value: float, epoch: int = 0) -> SimpleNamespace:
    import torch

    return SimpleNamespace(
        is_global_zero=True,
        sanity_checking=False,
        current_epoch=epoch,
        callback_metrics={"val/psnr": torch.tensor(value)},
        strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
        should_stop=False,
    )


def test_pruning_callback_finds_its_trial_and_stops_it_when_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from imagelab.sweeps.optuna_pruning import OptunaPruning

    db = tmp_path / "study.db"
    study = _new_study(db)
    for value in (30.0, 31.0):  # two finished trials that reached ~30 dB after epoch 0
        trial = study.ask()
        trial.suggest_float("model.optimizer.lr", 1e-4, 1e-2, log=True)
        trial.report(value, 0)
        study.tell(trial, value)
    ahead, behind = study.ask(), study.ask()
    for trial in (ahead, behind):
        trial.suggest_float("model.optimizer.lr", 1e-4, 1e-2, log=True)

    outcomes = {}
    for trial, value in ((ahead, 32.0), (behind, 20.0)):
        overrides = [f"{k}={v}" for k, v in trial.params.items()] + ["hparams_search=denoiser_optuna"]
        job_dir = tmp_path / str(trial.number)
        job_cfg = compose(
            "train", ["hparams_search=denoiser_optuna", f"hydra.sweeper.storage.path={db}"], job_dir
        )
        as_multirun(job_cfg, overrides)
        monkeypatch.setenv(TRIAL_ENV, str(trial.number))  # what the sweeper hands each job
        callback = OptunaPruning("val/psnr", percentile=50.0, n_startup_trials=1, n_warmup_steps=0)
        trainer = _fake_trainer(value)
        callback.setup(trainer, None, "fit")
        assert callback.trial is not None and callback.trial.number == trial.number
        callback.on_validation_end(trainer, None)
        outcomes[trial.number] = (trainer.should_stop, callback.result_metrics())

    assert outcomes[ahead.number] == (False, {"optuna/trial_number": float(ahead.number)})
    stopped, metrics = outcomes[behind.number]
    assert stopped and metrics["optuna/pruned_at_epoch"] == 0.0
    stored = _load_study(db).trials[behind.number]
    assert stored.intermediate_values == {0: 20.0} and stored.user_attrs["pruned_at_epoch"] == 0
    assert stored.user_attrs["output_dir"] == os.path.abspath(tmp_path / str(behind.number))


def test_pruning_callback_does_nothing_outside_an_optuna_sweep(tmp_path: Path) -> None:
    from imagelab.sweeps.optuna_pruning import OptunaPruning

    compose("train", ["hparams_search=denoiser_optuna"], output_dir=tmp_path)  # a single run, not -m
    callback = OptunaPruning("val/psnr", n_startup_trials=0, n_warmup_steps=0)
    trainer = _fake_trainer(-100.0)
    callback.setup(trainer, None, "fit")
    callback.on_validation_end(trainer, None)
    assert callback.trial is None and not trainer.should_stop and callback.result_metrics() == {}


def test_the_sweeper_hands_every_job_its_trial_number() -> None:
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from optuna.distributions import LogUniformDistribution

    pass_trial_numbers_to_jobs()
    pass_trial_numbers_to_jobs()  # patching twice adds the override once
    sweeper = OptunaSweeperImpl(
        sampler=None,
        direction="maximize",
        storage=None,
        study_name=None,
        n_trials=2,
        n_jobs=2,
        max_failure_rate=1.0,
        search_space=None,
        custom_search_space=None,
        params=None,
    )
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 1.0)  # an earlier trial: the batch's trials are numbers 1 and 2
    trials = [study.ask(), study.ask()]
    space = {"model.optimizer.lr": LogUniformDistribution(1e-4, 1e-2)}
    jobs = sweeper._configure_trials(trials, space, {"model.net.width": 8})
    for trial, job in zip(trials, jobs, strict=True):
        lr = trial.params["model.optimizer.lr"]
        assert list(job) == [
            f"model.optimizer.lr={lr}",
            "model.net.width=8",
            f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
        ]
    assert [t.number for t in trials] == [1, 2]


def test_jobs_proposing_the_same_point_each_report_to_their_own_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two running trials with identical parameters (two drivers, or one batch, proposing the same point):
    each job opens the trial it was given, whichever job starts first."""

    from imagelab.sweeps.optuna_pruning import OptunaPruning

    db = tmp_path / "study.db"
    study = _new_study(db)
    first, second = study.ask(), study.ask()
    for trial in (first, second):
        trial.suggest_categorical("model.net.width", [16])  # the same point
    overrides = ["model.net.width=16", "hparams_search=denoiser_optuna"]
    for trial, value in ((first, 25.0), (second, 21.0)):  # the older trial's job starts first
        job_dir = tmp_path / f"job{trial.number}"
        job_cfg = compose(
            "train", ["hparams_search=denoiser_optuna", f"hydra.sweeper.storage.path={db}"], job_dir
        )
        as_multirun(job_cfg, overrides)
        monkeypatch.setenv(TRIAL_ENV, str(trial.number))
        callback = OptunaPruning("val/psnr", n_startup_trials=5, n_warmup_steps=0)
        trainer = _fake_trainer(value)
        callback.setup(trainer, None, "fit")
        callback.on_validation_end(trainer, None)
        assert callback.result_metrics() == {"optuna/trial_number": float(trial.number)}

    stored = _load_study(db).trials
    assert [t.intermediate_values for t in stored] == [{0: 25.0}, {0: 21.0}]
    assert [t.user_attrs["output_dir"] for t in stored] == [
        os.path.abspath(tmp_path / "job0"),
        os.path.abspath(tmp_path / "job1"),
    ]


def test_a_job_without_its_trial_number_does_not_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from imagelab.sweeps.optuna_pruning import OptunaPruning

    db = tmp_path / "study.db"
    study = _new_study(db)
    study.ask().suggest_categorical("model.net.width", [16])
    job_cfg = compose(
        "train", ["hparams_search=denoiser_optuna", f"hydra.sweeper.storage.path={db}"], tmp_path
    )
    as_multirun(job_cfg, ["model.net.width=16"])
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    callback = OptunaPruning("val/psnr", n_startup_trials=0, n_warmup_steps=0)
    callback.setup(_fake_trainer(20.0), None, "fit")
    assert callback.trial is None  # no guessing from the parameters
