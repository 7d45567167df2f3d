"""Multi-objective (NSGA-II) and evolutionary (CMA-ES) Optuna presets: every trial records both objectives,
scripts/summarize.py draws the Pareto front."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.compose import as_multirun, compose
from tests.helpers.overrides import QUIET
from tests.helpers.runs import read_metrics, run_script


def test_pareto_front_of_max_accuracy_min_parameters() -> None:
    from imagelab.sweeps.summary.pareto import dominates, pareto_front

    modes = ["max", "min"]
    points = [[0.90, 100.0], [0.95, 1000.0], [0.85, 1000.0], [0.90, 50.0], [0.95, 1000.0]]
    assert dominates([0.90, 50.0], [0.90, 100.0], modes) and not dominates([0.9, 50.0], [0.9, 50.0], modes)
    assert pareto_front(points, modes) == [1, 3, 4]  # [0.85, 1000] and [0.90, 100] are dominated


def test_multi_objective_jobs_return_every_value_and_check_the_directions(tmp_path: Path) -> None:
    from imagelab.core.errors import UserError
    from imagelab.sweeps.optuna_search import check_sweeper_direction
    from imagelab.tasks.runner import run_task

    cfg = compose(
        "train", ["experiment=digits_small_cnn", "hparams_search=classifier_nsga2"], output_dir=tmp_path
    )
    as_multirun(cfg)

    def job(values: list[float]):
        objective = {"metric": "val/acc", "mode": "max", "best": values[0], "values": values}
        return lambda _cfg: {"objective": objective, "metrics": {}}

    assert run_task(job([0.9, 1000.0]), cfg) == [0.9, 1000.0]  # the sweeper's multi-objective protocol
    assert run_task(job([0.9, float("nan")]), cfg) is None  # recorded FAILED, the study goes on
    check_sweeper_direction("max", ["min"])
    with pytest.raises(UserError, match="one direction per objective"):
        check_sweeper_direction("max", ["max"])
    with pytest.raises(UserError, match="one direction per objective"):
        check_sweeper_direction("max")


@pytest.mark.parametrize("preset", ["classifier_nsga2", "classifier_cmaes"])
def test_presets_compose_with_their_samplers(preset: str) -> None:
    cfg = compose("train", ["experiment=digits_small_cnn", f"hparams_search={preset}"])
    sampler = cfg.hydra.sweeper.sampler._target_
    assert sampler.endswith("NSGAIISampler" if preset == "classifier_nsga2" else "CmaEsSampler")
    if preset == "classifier_nsga2":
        assert list(cfg.hydra.sweeper.direction) == ["maximize", "minimize"]
        assert [dict(a) for a in cfg.objective.also] == [{"metric": "model/params_trainable", "mode": "min"}]


@pytest.mark.slow
def test_nsga2_sweep_records_both_objectives_and_draws_the_pareto_front(tmp_path: Path) -> None:
    sweep = tmp_path / "nsga"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_script(
            "train.py",
            "-m",
            "experiment=digits_small_cnn",
            "hparams_search=classifier_nsga2",
            "hydra.sweeper.n_trials=4",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",  # a few steps: the test is about the bookkeeping
            "+trainer.limit_val_batches=1",
            "test=false",
            "logger=none",
            *QUIET,
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
        )
    records = [read_metrics(sweep / str(i)) for i in range(4)]
    for record in records:
        objective = record["objective"]
        assert objective["metrics"] == ["val/acc", "model/params_trainable"]
        assert objective["values"][0] == pytest.approx(objective["best"])
        assert objective["values"][1] == record["metrics"]["model/params_trainable"] > 0
    import optuna

    from imagelab.sweeps.optuna_search import sqlite_storage

    study = optuna.load_study(study_name="classifier_nsga2", storage=sqlite_storage(str(sweep / "optuna.db")))
    assert len(study.trials) == 4 and all(len(t.values) == 2 for t in study.trials)
    proc = run_script("summarize.py", str(sweep), cwd=tmp_path)
    assert (sweep / "plots" / "pareto_front.png").stat().st_size > 1000
    assert "pareto_front.png" in proc.stdout
