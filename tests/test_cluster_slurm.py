"""Multi-node DDP, requeue and submitit sweeps on a real SLURM scheduler: the local two-node cluster.

The module starts the cluster with ``scripts/cluster/local_slurm.sh start`` (installing slurm-wlm and munge
when missing) and skips when that is impossible (not root). Jobs are tiny: a 4-layer, 8-channel DnCNN for two
epochs of 96 patches, the same experiment as tests/test_ddp_equivalence.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.local_cluster import slurm_job_env, start_local_slurm
from tests.helpers.overrides import DDP_EQUALITY as COMMON
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import run_script, single_run_dir

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TRAIN_SBATCH = REPO_ROOT / "scripts" / "cluster" / "train.sbatch"
ON_CPU = ["trainer.accelerator=cpu", "trainer.precision=32-true", "print_config=false"]
PAUSE = "tests.helpers.cluster_faults.PauseForSignalAtStep"
PAUSE_STEP = 8  # epoch 2 of 2 (96 patches / global batch 16 = 6 steps per epoch)
JOB_LIMIT_S = 600


@pytest.fixture(scope="module")
def cluster() -> None:
    """The local two-node cluster, started (idempotently) by the script users run."""
    start_local_slurm()


def _sbatch(
    run_dir: Path, *overrides: str, wait: bool, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Submit scripts/cluster/train.sbatch from the repository root, as its header says; ``options`` are
    sbatch options (they override the script's ``#SBATCH`` lines)."""
    cmd = ["sbatch", "--parsable", f"--output={run_dir.parent}/slurm-%j.out", *(["--wait"] if wait else [])]
    cmd += list(options)
    proc = subprocess.run(
        [*cmd, str(TRAIN_SBATCH), *COMMON, *ON_CPU, "data.batch_size=8", *overrides],
        cwd=REPO_ROOT,
        env={**slurm_job_env(), "RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=JOB_LIMIT_S,
    )
    return proc


def _job_state(job: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True)
    parts = out.stdout.split()
    return (parts[0], parts[1]) if len(parts) >= 2 else ("GONE", "")


@pytest.fixture(scope="module")
def two_nodes(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The experiment on 2 nodes x 1 process (gloo, batch 8 each) and on one process (batch 16)."""
    root = tmp_path_factory.mktemp("slurm")
    run_dir = root / "run"
    proc = _sbatch(run_dir, wait=True)
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in root.glob("slurm-*.out"))
    single_root = tmp_path_factory.mktemp("single")
    run_script(
        "train.py", *COMMON, *ON_CPU, "trainer=cpu", "data.batch_size=16", cwd=single_root, timeout=400
    )
    return {"root": root, "run_dir": run_dir, "single": single_run_dir(single_root)}


def test_two_nodes_under_slurm_match_one_process_and_write_one_run(two_nodes: dict) -> None:
    run_dir = two_nodes["run_dir"]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["world_size"] == 2
    assert sorted(p.name for p in two_nodes["root"].iterdir() if p.is_dir()) == ["run"]  # one run folder
    runs = find_offline_runs(two_nodes["root"])
    assert len(runs) == 1 and Path(runs[0]).name.endswith(record["wandb"]["id"])  # one W&B run
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2  # best + last, by rank 0 only
    history = read_offline_run(runs[0])["history"]
    assert len([row for row in history if "val/psnr" in row]) == 2  # one per epoch, logged once

    single = json.loads((two_nodes["single"] / "metrics.json").read_text())["metrics"]
    ddp = record["metrics"]
    assert single["val/psnr"] > single["val/psnr_noisy"] + 0.1  # training moved the weights
    for key in ("val/psnr", "val/psnr_noisy", "test/psnr", "test/psnr_noisy"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-3), key
    for key in ("val/ssim", "test/ssim"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-4), key


def _start_paused(tmp_path: Path, options: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Submit the 2-node job paused after step PAUSE_STEP until it gets a signal; its run folder and job id,
    once it reached that step."""
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    pause = [f"+callbacks.fault._target_={PAUSE}", f"+callbacks.fault.step={PAUSE_STEP}"]
    # the ranks agree on a signal at check points: every 2 batches here, so the stop falls mid-epoch (step 8)
    # and the requeued job still has training and the epoch's validation to do
    pause.append("guard_every_n_steps=2")
    proc = _sbatch(run_dir, *pause, f"+callbacks.fault.marker={marker}", wait=False, options=options)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    deadline = time.monotonic() + JOB_LIMIT_S
    while not marker.exists():
        assert time.monotonic() < deadline and _job_state(job)[0] != "GONE", "the job never reached the step"
        time.sleep(1)
    return run_dir, job


def _wait_until_gone(job: str, run_dir: Path) -> tuple[str, str, str] | None:
    """Wait for the job to end, starting it at once whenever SLURM holds it after a requeue; the run's
    (status, signal, W&B id) while it was held, None when it never was."""
    deadline, interrupted = time.monotonic() + JOB_LIMIT_S, None
    while (state := _job_state(job))[0] != "GONE":
        assert time.monotonic() < deadline, f"job {job} still {state} after {JOB_LIMIT_S} s"
        if state == ("PENDING", "BeginTime"):  # SLURM holds a requeued job for a while: start it now
            record = json.loads((run_dir / "metrics.json").read_text())
            interrupted = interrupted or (record["status"], record["signal"], record["wandb"]["id"])
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
        time.sleep(1)
    return interrupted


def _assert_continued_to_the_whole_run(run_dir: Path, wandb_id: str, whole_dir: Path) -> None:
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["status"] == "completed" and final["wandb"]["id"] == wandb_id
    assert sorted(p.name for p in run_dir.parent.iterdir() if p.is_dir()) == ["run"]
    whole = json.loads((whole_dir / "metrics.json").read_text())["metrics"]
    for key in ("val/psnr_best", "test/psnr", "test/ssim"):
        assert final["metrics"][key] == pytest.approx(whole[key], abs=1e-4), key


def test_usr1_saves_requeues_and_continues_in_the_same_folder_and_wandb_run(
    two_nodes: dict, tmp_path: Path
) -> None:
    run_dir, job = _start_paused(tmp_path)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    interrupted = _wait_until_gone(job, run_dir)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "SIGUSR1 received" in log and f"requeued SLURM job {job}" in log, log[-3000:]
    assert interrupted is not None and interrupted[:2] == ("interrupted", "SIGUSR1")
    _assert_continued_to_the_whole_run(run_dir, interrupted[2], two_nodes["run_dir"])


def test_scontrol_requeue_stops_with_sigterm_and_continues_the_same_run(
    two_nodes: dict, tmp_path: Path
) -> None:
    run_dir, job = _start_paused(tmp_path)
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM to every task, then a new start
    interrupted = _wait_until_gone(job, run_dir)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert interrupted is not None and interrupted[:2] == ("interrupted", "SIGTERM"), log[-3000:]
    _assert_continued_to_the_whole_run(run_dir, interrupted[2], two_nodes["run_dir"])


def test_a_job_killed_at_its_time_limit_is_interrupted_with_a_loadable_last_ckpt(
    cluster: None, tmp_path: Path
) -> None:
    import torch

    # one minute, no requeue, and a signal Python ignores in place of the USR1 time warning: the job sits
    # paused until SLURM's SIGTERM at the time limit
    options = ("--time=1", "--signal=URG@1", "--no-requeue")
    run_dir, job = _start_paused(tmp_path, options)
    assert _wait_until_gone(job, run_dir) is None
    record = json.loads((run_dir / "metrics.json").read_text())
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM", log[-3000:]
    assert "DUE TO TIME LIMIT" in log, log[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == PAUSE_STEP and ckpt["state_dict"]  # saved at the step it was stopped


def test_a_submitit_sweep_runs_three_slurm_jobs_in_one_wandb_group(cluster: None, tmp_path: Path) -> None:
    tiny = [*COMMON, *ON_CPU, "trainer.max_epochs=1", "data.patches_per_epoch=32"]
    proc = run_script(
        "train.py",
        "-m",
        "hydra/launcher=slurm_cpu",
        "seed=1,2,3",
        *tiny,
        cwd=tmp_path,
        env=slurm_job_env(),
        timeout=JOB_LIMIT_S,
    )
    [sweep] = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    records = [json.loads((p / "metrics.json").read_text()) for p in jobs]
    assert [r["status"] for r in records] == ["completed"] * 3
    assert len({r["wandb"]["group"] for r in records}) == 1 and records[0]["wandb"]["group"]
    assert len({r["wandb"]["id"] for r in records}) == 3
    assert len(list((sweep / ".submitit").glob("*_*/*_result.pkl"))) == 3  # three SLURM array tasks
    assert proc.stdout.count("Bypassing sacct error") + proc.stderr.count("Bypassing sacct error") == 0
    report = run_script("summarize.py", str(sweep), cwd=tmp_path)
    assert "best job: " in report.stdout and (sweep / "summary.md").is_file()


def test_a_failing_slurm_sweep_job_is_named_and_the_sweep_exits_1(cluster: None, tmp_path: Path) -> None:
    tiny = [*COMMON, *ON_CPU, "trainer.max_epochs=1", "data.patches_per_epoch=32"]
    # job 1 gets width 0, which the network rejects inside its SLURM job
    args = ["-m", "hydra/launcher=slurm_cpu", *tiny, "model.net.width=8,0"]  # after COMMON's width
    proc = run_script("train.py", *args, cwd=tmp_path, env=slurm_job_env(), timeout=JOB_LIMIT_S, check=False)
    out = proc.stdout + proc.stderr
    [sweep] = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    assert proc.returncode == 1, out[-4000:]
    assert "1 of 2 jobs did not complete" in out and str(sweep / "1" / "metrics.json") in out, out[-4000:]
    assert str(sweep / "0" / "metrics.json") not in out
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "width must be >= 1" in failed["error"]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
