"""A rank of a 2-node SLURM job that is killed (``kill -9``) ends the job: a non-zero exit, one line naming
the rank within ``lost_rank_timeout_s``, ``metrics.json`` failed. The local two-node cluster, 1 task per node,
the tiny experiment of tests/test_cluster_slurm.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.local_cluster import slurm_job_env, start_local_slurm
from tests.helpers.overrides import DDP_EQUALITY as COMMON
from tests.helpers.paths import REPO_ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TRAIN_SBATCH = REPO_ROOT / "scripts" / "cluster" / "train.sbatch"
ON_CPU = ["trainer.accelerator=cpu", "trainer.precision=32-true", "print_config=false"]
KILL = "tests.helpers.cluster_faults.KillRankAtStep"
TIMEOUT_S = 5  # lost_rank_timeout_s


def test_a_killed_rank_ends_the_slurm_job_with_one_line_naming_it(tmp_path: Path) -> None:
    start_local_slurm()
    run_dir, killed_at = tmp_path / "run", tmp_path / "killed_at"
    fault = [
        f"+callbacks.fault._target_={KILL}",
        "+callbacks.fault.step=3",
        f"+callbacks.fault.marker={killed_at}",
    ]
    # rank 0 then sleeps in the callback (not in a collective that could fail): only the lost-rank watch ends it
    fault.append("+callbacks.fault.hang_s=600")
    sbatch = ["sbatch", "--wait", "--parsable", f"--output={tmp_path}/slurm-%j.out", str(TRAIN_SBATCH)]
    proc = subprocess.run(
        [*sbatch, *COMMON, *ON_CPU, "data.batch_size=8", *fault, f"lost_rank_timeout_s={TIMEOUT_S}"],
        cwd=REPO_ROOT,
        env={**slurm_job_env(), "RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    [log_file] = tmp_path.glob("slurm-*.out")
    log = log_file.read_text()
    assert proc.returncode != 0, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: DDP rank 1 (pid "), log[-3000:]
    assert " on n2) died" in errors[0]  # rank 1 ran on the second node
    assert "Traceback" not in log, log[-3000:]
    assert (
        "task 0: Exited with exit code 4" in log
    )  # rank 0's lost-rank exit (srun names the killed task too)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == errors[0].removeprefix("error: ")
    assert record["finished_at"] - float(killed_at.read_text()) < TIMEOUT_S
