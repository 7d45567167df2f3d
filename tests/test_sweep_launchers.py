"""Launchers and sweep drivers: DDP inside a multirun, SLURM job arrays, W&B Sweeps, requeue.

The joblib launcher (jobs in parallel) is exercised by the grid sweep of tests/test_sweep_grid.py.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers.compose import compose
from tests.helpers.overrides import sweep_denoise
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import psnr_gain, read_metrics, run_script

TINY = sweep_denoise("csv")


def _sweep(root: Path) -> Path:
    sweeps = sorted((root / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


@pytest.mark.slow
def test_ddp_inside_a_multirun_keeps_one_folder_and_one_configuration_per_job(tmp_path: Path) -> None:
    # 256 patches: 4 steps of batch 32 on each of the 2 ranks, enough to beat the noisy input
    overrides = [*TINY, "data.patches_per_epoch=256", "trainer=ddp_sim", "model.net.width=8,12"]
    proc = run_script("train.py", "-m", *overrides, cwd=tmp_path)
    outputs = tmp_path / "outputs" / "train"
    assert sorted(p.name for p in outputs.iterdir()) == ["multiruns"], "DDP ranks must not create run folders"
    sweep = _sweep(tmp_path)
    jobs = _job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"], "exactly two job folders"
    launches = [line for line in (proc.stdout + proc.stderr).splitlines() if "starting DDP rank 1:" in line]
    assert len(launches) == 2, "each job starts its own second rank"
    for job, width, launch in zip(jobs, (8, 12), launches, strict=True):
        metrics = read_metrics(job)
        # DDP checks that all ranks hold identically shaped parameters: another width on rank 1 fails the job.
        assert metrics["status"] == "completed", metrics["error"]
        assert psnr_gain(metrics["metrics"]) > 0.05, metrics["metrics"]
        assert (job / "train_ddp_rank1.log").is_file()  # rank 1 ran in this job's folder ...
        assert (
            f"model.net.width={width}" in launch and f'hydra.run.dir="{job}"' in launch
        )  # ... with its overrides
        assert " -m " not in launch and "--multirun" not in launch
        assert len(list((job / "checkpoints").glob("*.ckpt"))) == 2


def _fake_slurm(bin_dir: Path, capture: Path) -> dict[str, str]:
    """``srun`` (so submitit believes it is on a cluster) and an ``sbatch`` that keeps the script, refuses."""
    bin_dir.mkdir()
    capture.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "{capture}/"\necho "sbatch: error: test double, nothing submitted" >&2\nexit 1\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_slurm_launcher_submits_a_job_array_with_partition_gpus_time_and_requeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _fake_slurm(tmp_path / "bin", tmp_path / "sbatch_scripts")
    monkeypatch.setenv("PATH", env["PATH"])
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2"]
    proc = run_script(
        "train.py", "-m", *overrides, "trainer=ddp", "trainer.devices=2", "model.optimizer.lr=1e-3,3e-4",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert (
        proc.returncode != 0 and "test double" in proc.stderr
    )  # our sbatch refused, after writing the script
    scripts = list((tmp_path / "sbatch_scripts").glob(".submission_file_*.sh"))
    assert len(scripts) == 1, "one sbatch call for the whole sweep (a job array)"
    script = scripts[0].read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",  # one task per GPU: Lightning DDP under SLURM
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=240",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --array=0-1%2",
        "export PYTHONUNBUFFERED=1",
    ):
        assert line in script, f"{line!r} missing from\n{script}"
    sweep = _sweep(tmp_path)
    assert f"-m submitit.core._submit {sweep}/.submitit/" in script
    # the pickled jobs carry each job's overrides (no -m) and the requeue budget for time-outs
    pickles = sorted((sweep / ".submitit").glob("*.pkl"))
    assert len(pickles) == 2
    jobs = []
    for path in pickles:
        with open(path, "rb") as f:
            delayed = pickle.load(f)
        jobs.append(delayed.args[0])
        assert delayed._timeout_countdown == 3
    assert sorted(jobs) == sorted(
        [["trainer=ddp", "trainer.devices=2", f"model.optimizer.lr={lr}"] for lr in ("0.001", "0.0003")]
    )


def _agent_command(sweep_cfg: dict, values: dict) -> list[str]:
    """The command ``wandb agent`` runs for one suggestion, expanded with wandb's own macro helpers."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep_cfg["command"]))
    macros = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros.update(interpreter=[sys.executable], program=[sweep_cfg["program"]], env=["/usr/bin/env"])
    expanded: list[str] = []
    for chunk in map(str, command):  # same rule as wandb's agent: a whole-chunk ${macro} is replaced
        expanded += macros.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return expanded


@pytest.mark.slow
def test_wandb_sweep_definition_drives_train_py_with_hydra_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_cfg = yaml.safe_load((REPO_ROOT / "sweeps" / "wandb_sweep.yaml").read_text())
    assert (REPO_ROOT / sweep_cfg["program"]).is_file()
    assert sweep_cfg["metric"] == {"name": "val/psnr_best", "goal": "maximize"}
    suggestion = {"model.optimizer.lr": 0.00123, "model.net.width": 48, "model.net.depth": 9}
    assert set(suggestion) == set(sweep_cfg["parameters"])
    command = _agent_command(sweep_cfg, suggestion)
    assert command[:3] == ["/usr/bin/env", sys.executable, "scripts/train.py"]
    overrides = command[3:]
    assert overrides[:3] == ["model.optimizer.lr=0.00123", "model.net.width=48", "model.net.depth=9"]

    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "run42")
    cfg = compose("train", overrides, output_dir=tmp_path)  # Hydra accepts every override the agent passes
    assert cfg.model.optimizer.lr == 0.00123 and cfg.model.net.width == 48 and cfg.model.net.depth == 9
    assert "logger" in cfg and "wandb" in cfg.logger and list(cfg.tags) == ["wandb_sweep"]
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    assert run_dir == tmp_path / "outputs" / "train" / "wandb_sweeps" / "abc123" / "run42"
    # and the real script parses the same command line
    proc = run_script("train.py", *overrides, "--cfg", "job", cwd=tmp_path)
    assert yaml.safe_load(proc.stdout)["model"]["optimizer"]["lr"] == 0.00123


def test_slurm_and_joblib_launcher_configs_compose(tmp_path: Path) -> None:
    cfg = compose("train", ["hydra/launcher=slurm"], output_dir=tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 1
    assert launcher.max_num_timeout > 0 and launcher.additional_parameters.requeue is True
    cfg = compose("train", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], output_dir=tmp_path)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_requeued_slurm_job_resumes_from_its_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagelab.core.requeue import slurm_restart_count
    from imagelab.tasks.resume import resume_point

    def requeued_checkpoint() -> str | None:  # what the train task does at the start of every job
        point = resume_point(None, tmp_path, requeued=slurm_restart_count() > 0)
        return str(point.checkpoint) if point else None

    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert requeued_checkpoint() is None  # first start: train from scratch
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint() == str(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    assert requeued_checkpoint() is None  # requeued before the first checkpoint: start over
