"""The local two-node SLURM cluster for the ``cluster``-marked tests: started (idempotently) by the script
users run, ``scripts/cluster/local_slurm.sh start``; the test is skipped where that is impossible (not root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO_ROOT

LOCAL_SLURM = REPO_ROOT / "scripts" / "cluster" / "local_slurm.sh"


def start_local_slurm() -> None:
    """Start the local cluster (installing slurm-wlm and munge when missing) and check that both nodes are
    up: idle, or busy with another job (a test's jobs then wait in the queue). Skips when not root."""
    if os.geteuid() != 0:
        pytest.skip(
            "the local SLURM cluster needs root (local_slurm.sh installs packages and starts daemons)"
        )
    proc = subprocess.run([str(LOCAL_SLURM), "start"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "n[1-2]" in proc.stdout and re.search(r" (idle|alloc|mix|comp)\S* +n\[1-2\]", proc.stdout), (
        proc.stdout
    )


def slurm_job_env() -> dict[str, str]:
    """The environment for a SLURM job started by a test: this checkout on ``PYTHONPATH`` (the jobs import
    it, not the installed copy) and this interpreter as ``PYTHON`` (scripts/cluster/train.sbatch)."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHON": sys.executable}
