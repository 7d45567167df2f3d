"""An Optuna search whose trials run as SLURM jobs, two at a time, on the local two-node cluster.

``scripts/train.py -m hparams_search=denoiser_optuna hydra/launcher=slurm_cpu hydra.sweeper.n_jobs=2``: the
sweeper asks two trials at a time, the submitit launcher submits them as one SLURM job array and waits for it.
Each trial trains a depth-3 DnCNN for one epoch of 64 patches (only the learning rate is searched).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from imagelab.sweeps.optuna_search import sqlite_storage
from tests.helpers.local_cluster import slurm_job_env, start_local_slurm
from tests.helpers.overrides import sweep_denoise
from tests.helpers.runs import read_metrics, run_script, sweep_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TRIALS = 4
AT_ONCE = 2  # hydra.sweeper.n_jobs: trials per batch, one SLURM job array each
SWEEP_LIMIT_S = 400  # about 90 s here


@pytest.fixture(scope="module")
def cluster() -> None:
    """The local two-node cluster, started (idempotently) by the script users run."""
    start_local_slurm()


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one moment (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_most_at_once_counts_overlapping_spans() -> None:
    assert _most_at_once([(0, 2), (1, 3), (3, 4)]) == 2  # the third starts as the second ends
    assert _most_at_once([(0, 1), (1, 2)]) == 1
    assert _most_at_once([(0, 5), (1, 2), (1.5, 3)]) == 3


def test_an_optuna_search_runs_its_trials_as_slurm_jobs_two_at_a_time(cluster: None, tmp_path: Path) -> None:
    import optuna

    run_script(
        "train.py",
        "-m",
        "hparams_search=denoiser_optuna",
        "hydra/launcher=slurm_cpu",
        f"hydra.sweeper.n_jobs={AT_ONCE}",
        f"hydra.sweeper.n_trials={TRIALS}",
        *sweep_denoise("csv"),
        cwd=tmp_path,
        env=slurm_job_env(),
        timeout=SWEEP_LIMIT_S,
    )
    [sweep] = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    trials = optuna.load_study(
        study_name="denoiser_optuna", storage=sqlite_storage(str(sweep / "optuna.db"))
    ).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * TRIALS
    jobs = sweep_jobs(sweep)
    assert [j.name for j in jobs] == [str(n) for n in range(TRIALS)]
    records = [read_metrics(j) for j in jobs]
    assert [r["status"] for r in records] == ["completed"] * TRIALS
    for trial in trials:  # in a fresh study trial k is job k; each job reported to its own trial
        record = records[trial.number]
        assert trial.value == pytest.approx(record["objective"]["best"])
        assert record["metrics"]["optuna/trial_number"] == trial.number
        assert trial.user_attrs["output_dir"] == str(jobs[trial.number])

    # each trial ran as its own SLURM job: one task of a job array per batch of two
    ids = [yaml.safe_load((j / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"] for j in jobs]
    assert all(re.fullmatch(r"\d+_\d+", i) for i in ids) and len(set(ids)) == TRIALS, ids
    assert len({i.split("_")[0] for i in ids}) == TRIALS // AT_ONCE, ids
    for i in ids:
        assert (sweep / ".submitit" / i / f"{i}_0_result.pkl").is_file(), i  # task 0 of SLURM job i

    # never more than two trials at once, and two at once at least once (the jobs' own start and end times)
    spans = [(r["started_at"], r["finished_at"]) for r in records]
    assert _most_at_once(spans) == AT_ONCE, spans

    report = run_script("summarize.py", str(sweep), cwd=tmp_path)
    assert "best job: " in report.stdout and (sweep / "summary.md").is_file()
    best = max(range(TRIALS), key=lambda n: records[n]["objective"]["best"])
    assert f"best job: {best}" in report.stdout, report.stdout
