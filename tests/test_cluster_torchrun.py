"""torchrun across two "nodes" on this machine: two launches with --node-rank 0 and 1 train one job.

Same experiment and expectations as tests/test_ddp_equivalence.py: 2 gloo processes x batch 8 equal one
process x batch 16, in one run folder with one W&B run and rank 0's checkpoints. With ``--max-restarts=1``
a rank killed in epoch 2 is restarted with the others, and they continue the run from its ``last.ckpt``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagelab.tracking.wandb_offline import find_offline_runs
from tests.helpers.overrides import DDP_EQUALITY as COMMON
from tests.helpers.paths import REPO_ROOT, SCRIPTS
from tests.helpers.runs import run_script, single_run_dir

ON_CPU = ["trainer.accelerator=cpu", "trainer.precision=32-true", "print_config=false"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun_command(launch: list[str], run_dir: Path, *overrides: str) -> list[str]:
    """torchrun with its ``launch`` options, two nodes of one process each, running the tiny 2-node training."""
    torchrun = shutil.which("torchrun")
    return [
        *([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]),
        "--nnodes=2",
        "--nproc-per-node=1",
        *launch,
        str(SCRIPTS / "train.py"),
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        f"hydra.run.dir={run_dir}",
        *COMMON,
        *ON_CPU,
        "data.batch_size=8",
        *overrides,
    ]


def _torchrun_node(rank: int, port: int, run_dir: Path) -> subprocess.Popen[str]:
    launch = [f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}"]
    cmd = _torchrun_command(launch, run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        cmd, env=env, cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_torchrun_nodes_match_one_process_and_write_one_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "torchrun" / "run"
    run_dir.parent.mkdir()
    port = _free_port()
    nodes = [_torchrun_node(rank, port, run_dir) for rank in (0, 1)]
    outputs = [node.communicate(timeout=500) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    single_root = tmp_path / "single"
    single_root.mkdir()
    run_script(
        "train.py", *COMMON, *ON_CPU, "trainer=cpu", "data.batch_size=16", cwd=single_root, timeout=400
    )

    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["world_size"] == 2
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"]
    runs = find_offline_runs(run_dir.parent)
    assert len(runs) == 1 and Path(runs[0]).name.endswith(record["wandb"]["id"])
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2  # best + last, by rank 0 only
    single = json.loads((single_run_dir(single_root) / "metrics.json").read_text())["metrics"]
    ddp = record["metrics"]
    assert single["val/psnr"] > single["val/psnr_noisy"] + 0.1
    for key in ("val/psnr", "val/psnr_noisy", "test/psnr", "test/psnr_noisy"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-3), key
    for key in ("val/ssim", "test/ssim"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-4), key


KILL = "tests.helpers.cluster_faults.KillRankAtStep"


def _restartable_torchrun_nodes(port: int, run_dir: Path, *overrides: str) -> list[subprocess.Popen[str]]:
    """Two torchrun "nodes" with ``--max-restarts=1`` and the c10d rendezvous (docs/scaling.md)."""
    launch = [
        "--max-restarts=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={run_dir.parent.name}",
    ]
    cmd = _torchrun_command(launch, run_dir, *overrides)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return [
        subprocess.Popen(
            cmd,
            env=env,
            cwd=run_dir.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the test ends every process of a launch that does not finish
        )
        for _ in range(2)
    ]


def _finish(nodes: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    try:
        return [node.communicate(timeout=timeout)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_continues_the_run_to_the_same_metrics(tmp_path: Path) -> None:
    whole_dir, run_dir = tmp_path / "whole" / "run", tmp_path / "restarted" / "run"
    whole_dir.parent.mkdir()
    run_dir.parent.mkdir()
    for out in _finish(_restartable_torchrun_nodes(_free_port(), whole_dir), timeout=300):
        assert "resuming" not in out  # nothing failed: no restart
    killed = tmp_path / "killed"
    fault = [f"+callbacks.fault._target_={KILL}", "+callbacks.fault.step=8"]  # epoch 2 of 2
    fault += ["+callbacks.fault.first_start_only=true", f"+callbacks.fault.marker={killed}"]
    outputs = _finish(_restartable_torchrun_nodes(_free_port(), run_dir, *fault), timeout=400)
    assert killed.is_file(), outputs[0][-3000:]  # a rank was killed ...
    last = run_dir / "checkpoints" / "last.ckpt"
    for out in outputs:  # ... and both restarted ranks continued from the run's own last.ckpt
        assert f"resuming {run_dir} from {last}" in out, out[-3000:]

    record = json.loads((run_dir / "metrics.json").read_text())
    whole = json.loads((whole_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["world_size"] == 2
    assert [p.name for p in run_dir.parent.iterdir() if p.is_dir()] == ["run"]  # the same folder
    assert {Path(r).name.rsplit("-", 1)[-1] for r in find_offline_runs(run_dir.parent)} == {
        record["wandb"]["id"]
    }  # the same W&B run (one offline folder per start)
    for key in ("val/psnr_best", "test/psnr", "test/ssim"):
        assert record["metrics"][key] == pytest.approx(whole["metrics"][key], abs=1e-4), key
