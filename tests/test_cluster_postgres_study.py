"""One Optuna study in a real PostgreSQL, shared by two sweep drivers that run at the same time.

The module starts the server with ``scripts/cluster/local_postgres.sh start`` (installing Debian's postgresql
when missing) and skips when that is impossible (not root). Each driver is ``scripts/train.py -m
hparams_search=denoiser_optuna`` with the study's storage on the server; driver B gives every trial a network
width of 0 (a bad value), so all its trials fail while driver A's complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imagelab.core.errors import UserError
from imagelab.sweeps.optuna_search import sqlite_storage
from tests.helpers.overrides import sweep_denoise
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import read_metrics, sweep_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
LOCAL_POSTGRES = REPO_ROOT / "scripts" / "cluster" / "local_postgres.sh"
TRIALS = 3  # per driver
DRIVER_LIMIT_S = 240  # each driver takes about 40 s here
TINY = [*sweep_denoise("csv"), "model.net.depth=5"]  # searched: the preset's lr range


@pytest.fixture(scope="module")
def storage_url() -> str:
    """The local PostgreSQL, started (idempotently) by the script users run; its URL has no password."""
    if os.geteuid() != 0:
        pytest.skip("the local PostgreSQL needs root (local_postgres.sh installs packages and starts it)")
    proc = subprocess.run([str(LOCAL_POSTGRES), "start"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.split("storage URL: ")[-1].strip()
    assert url.startswith("postgresql://") and ":" not in url.split("//")[1].split("@")[0], url
    return url


def _driver(cwd: Path, url: str, study: str, *overrides: str) -> subprocess.Popen[str]:
    cwd.mkdir()
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        "-m",
        "hparams_search=denoiser_optuna",
        f"hydra.sweeper.storage.path={url}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={TRIALS}",
        *TINY,
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_drivers_share_one_study_and_a_failing_one_does_not_stop_the_other(
    storage_url: str, tmp_path: Path
) -> None:
    import optuna

    study_name = f"shared_{uuid.uuid4().hex[:8]}"
    a = _driver(tmp_path / "a", storage_url, study_name, "model.net.width=8", "seed=1")
    b = _driver(tmp_path / "b", storage_url, study_name, "model.net.width=0", "seed=2")
    try:
        out_a, out_b = a.communicate(timeout=DRIVER_LIMIT_S)[0], b.communicate(timeout=DRIVER_LIMIT_S)[0]
    finally:
        for driver in (a, b):
            if driver.poll() is None:
                driver.kill()
    assert a.returncode == 0, out_a[-4000:]
    assert b.returncode == 1 and f"{TRIALS} of {TRIALS} jobs did not complete" in out_b, out_b[-4000:]

    storage = sqlite_storage(storage_url)
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).trials
    finally:
        optuna.delete_study(study_name=study_name, storage=storage)
    # every trial recorded once, no trial number twice
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS))
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE"] * TRIALS + ["FAIL"] * TRIALS

    [sweep_a] = (tmp_path / "a" / "outputs" / "train" / "multiruns").iterdir()
    [sweep_b] = (tmp_path / "b" / "outputs" / "train" / "multiruns").iterdir()
    jobs_a = [read_metrics(j) for j in sweep_jobs(sweep_a)]
    jobs_b = [read_metrics(j) for j in sweep_jobs(sweep_b)]
    assert [j["status"] for j in jobs_a] == ["completed"] * TRIALS
    assert [j["status"] for j in jobs_b] == ["failed"] * TRIALS
    assert all("width must be >= 1" in j["error"] for j in jobs_b)
    # each completed trial is one of driver A's jobs, found by that job through the shared storage
    by_number = {t.number: t for t in trials}
    numbers_a = [int(j["metrics"]["optuna/trial_number"]) for j in jobs_a]
    assert len(set(numbers_a)) == TRIALS
    for number, job, folder in zip(numbers_a, jobs_a, sweep_jobs(sweep_a), strict=True):
        trial = by_number[number]
        assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(job["objective"]["best"])
        assert trial.user_attrs["output_dir"] == str(folder)
    # the drivers ran at the same time: B failed trials while A was between its first and last job
    assert jobs_a[0]["started_at"] < max(j["finished_at"] for j in jobs_b)
    assert min(j["started_at"] for j in jobs_b) < jobs_a[-1]["finished_at"]
    # the password stays out of everything the sweeps saved
    password = (Path.home() / ".pgpass").read_text().split(":")[-1].strip()
    for saved in [*tmp_path.rglob("*.yaml"), *tmp_path.rglob("*.log"), *tmp_path.rglob("metrics.json")]:
        assert password not in saved.read_text(errors="replace"), saved


def test_a_storage_url_with_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"holds a password.*~/\.pgpass or PGPASSWORD"):
        sqlite_storage("postgresql://imagelab:secret@127.0.0.1:5432/optuna")
