"""A DDP process that dies (kill -9) ends the whole job: exit 4, one line naming the rank, status failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.paths import REPO_ROOT, SCRIPTS
from tests.helpers.runs import single_run_dir

KILL = "tests.helpers.cluster_faults.KillRankAtStep"
DDP_TINY = [
    *FAST_DENOISE,
    "trainer=ddp_sim",
    "trainer.max_epochs=3",
    "data.patches_per_epoch=128",
    "data.eval_crop=32",
    "model.net.depth=3",
    "model.net.width=8",
    "model.num_panels=0",
    "print_config=false",
    f"+callbacks.fault._target_={KILL}",
    "+callbacks.fault.step=3",
]


def _train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, str(SCRIPTS / "train.py"), *DDP_TINY, *overrides]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def _assert_lost_rank_1(proc: subprocess.CompletedProcess[str], root: Path) -> None:
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "DDP rank 1 (pid " in errors[0] and "died (SIGKILL)" in errors[0], errors
    record = json.loads((single_run_dir(root) / "metrics.json").read_text())
    assert record["status"] == "failed" and "DDP rank 1" in record["error"]


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_one_line_naming_it(tmp_path: Path) -> None:
    _assert_lost_rank_1(_train(tmp_path), tmp_path)


@pytest.mark.slow
def test_a_job_stuck_after_a_lost_rank_is_ended_after_lost_rank_timeout_s(tmp_path: Path) -> None:
    # rank 0 then waits 600 s where no collective can fail: only the timeout (5 s) ends the job
    _assert_lost_rank_1(_train(tmp_path, "+callbacks.fault.hang_s=600", "lost_rank_timeout_s=5"), tmp_path)
