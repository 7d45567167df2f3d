"""A 2x2 grid multirun through the real script, two jobs at a time with the joblib launcher: four job
folders, four W&B runs in one group, jobs that really ran in parallel (with data-loader workers), a summary.

Four jobs on two worker processes: at least one worker runs two jobs one after the other, so this also covers
W&B runs being closed between jobs of one process (never merged).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.overrides import sweep_denoise
from tests.helpers.runs import read_metrics, run_script

TINY = [*sweep_denoise("wandb"), "model.net.width=8"]
GRID = ["model.optimizer.lr=1e-3,3e-3", "data.noise.sigma=15,25"]


def multirun_dir(root: Path, task: str = "train") -> Path:
    """The one multirun folder below ``root/outputs/<task>/multiruns``."""
    sweeps = sorted((root / "outputs" / task / "multiruns").iterdir())
    assert len(sweeps) == 1, f"expected one multirun folder, found {sweeps}"
    return sweeps[0]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("grid")
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data.num_workers=1"]
    run_script("train.py", "-m", *parallel, *TINY, *GRID, "tags=[pytest,grid]", cwd=root)
    sweep = multirun_dir(root)
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return {"root": root, "sweep": sweep, "jobs": jobs}


@pytest.mark.slow
def test_grid_gives_four_self_contained_job_folders(grid: dict) -> None:
    assert [p.name for p in grid["jobs"]] == ["0", "1", "2", "3"]
    assert not (grid["root"] / "outputs" / "train" / "runs").exists(), "a multirun must not write run folders"
    seen = set()
    for job in grid["jobs"]:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        metrics = read_metrics(job)
        assert metrics["status"] == "completed", metrics["error"]
        assert (job / "train.log").is_file() and Path(metrics["best_checkpoint"]).is_file()
        assert metrics["metrics"]["model/params_trainable"] > 0
        lr = next(o for o in overrides if o.startswith("model.optimizer.lr="))
        sigma = next(o for o in overrides if o.startswith("data.noise.sigma="))
        assert config["model"]["optimizer"]["lr"] == float(lr.split("=")[1])
        assert config["data"]["noise"]["sigma"] == float(sigma.split("=")[1])
        seen.add((lr, sigma))
    assert len(seen) == 4, "every grid point exactly once"


@pytest.mark.slow
def test_joblib_launcher_ran_jobs_in_parallel_worker_processes(grid: dict) -> None:
    records = [read_metrics(job) for job in grid["jobs"]]
    # completed = data loaders could start their worker processes inside joblib's loky workers
    assert all(r["status"] == "completed" for r in records), [r["error"] for r in records]
    assert len({r["pid"] for r in records}) >= 2, "the four jobs ran in more than one worker process"
    # Each job spends seconds importing and training: run one after the other, no two windows could overlap.
    overlapping = [
        (a, b)
        for a in records
        for b in records
        if a["pid"] != b["pid"] and a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    ]
    assert overlapping, [(r["pid"], r["started_at"], r["finished_at"]) for r in records]


@pytest.mark.slow
def test_grid_gives_four_wandb_runs_in_one_group_linked_to_their_folders(grid: dict) -> None:
    runs = find_offline_runs(grid["sweep"])
    assert len(runs) == 4
    read = [read_offline_run(r) for r in runs]
    assert len({r["run"]["id"] for r in read}) == 4, "one W&B run per job, never merged"
    groups = {r["run"]["group"] for r in read}
    assert groups == {f"train-{grid['sweep'].name}"}
    for job in grid["jobs"]:
        metrics = read_metrics(job)
        run_dir = Path(metrics["wandb"]["run_dir"])  # metrics.json -> W&B run
        assert run_dir.is_relative_to(job) and run_dir in runs
        run = read_offline_run(run_dir)
        assert run["run"]["id"] == metrics["wandb"]["id"]
        assert run["config"]["paths"]["output_dir"] == str(job)  # W&B run -> job folder
        assert run["run"]["job_type"] == "train" and set(run["run"]["tags"]) == {"pytest", "grid"}
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = next(o for o in overrides if o.startswith("model.optimizer.lr="))
        sigma = next(o for o in overrides if o.startswith("data.noise.sigma="))
        assert run["config"]["model"]["optimizer"]["lr"] == float(lr.split("=")[1])
        assert run["config"]["data"]["noise"]["sigma"] == float(sigma.split("=")[1])
        assert lr in run["run"]["name"].split(",") and sigma in run["run"]["name"].split(",")
        assert run["summary"]["test/psnr"] == pytest.approx(metrics["metrics"]["test/psnr"], abs=1e-4)


@pytest.mark.slow
def test_summarize_names_the_best_job_and_writes_table_and_plots(grid: dict) -> None:
    values = {job.name: read_metrics(job)["objective"]["best"] for job in grid["jobs"]}
    expected = max(values, key=values.get)
    proc = run_script("summarize.py", str(grid["sweep"]), cwd=grid["root"])
    assert f"best job: {expected} " in proc.stdout
    best_overrides = yaml.safe_load((grid["sweep"] / expected / ".hydra" / "overrides.yaml").read_text())
    reproduce = next(line for line in proc.stdout.splitlines() if line.startswith("reproduce: "))
    assert "train.py" in reproduce and " -m" not in reproduce
    for override in best_overrides:
        assert override in reproduce or f"'{override}'" in reproduce

    with open(grid["sweep"] / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["job"] == expected and len(rows) == 4
    ranked = [float(r["objective"]) for r in rows]
    assert ranked == sorted(ranked, reverse=True)
    md = (grid["sweep"] / "summary.md").read_text()
    assert f"**Best job: {expected}**" in md and "model.optimizer.lr" in md and "data.noise.sigma" in md
    plots = sorted(p.name for p in (grid["sweep"] / "plots").glob("*.png"))
    assert plots == ["objective_vs_data.noise.sigma.png", "objective_vs_model.optimizer.lr.png"]
    for plot in plots:
        assert f"plots/{plot}" in md
        assert (grid["sweep"] / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
