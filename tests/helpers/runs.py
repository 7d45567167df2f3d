"""Start the real scripts and read what a finished run left behind (run folders, ``metrics.json``, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.paths import SCRIPTS


def run_script(
    script: str,
    *overrides: str,
    cwd: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with Hydra overrides in ``cwd`` (outputs go to ``cwd/outputs``); ``env`` adds
    environment variables; ``check`` fails the test (with the output's tail) on a non-zero exit."""
    cmd = [sys.executable, str(SCRIPTS / script), *overrides]
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def single_run_dir(root: Path, task: str = "train") -> Path:
    """The one run directory under ``root/outputs/<task>/runs``; fails if there are none or several."""
    runs = sorted((root / "outputs" / task / "runs").iterdir())
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` record a task left in ``run_dir`` (status, error, metrics, objective, wandb, ...)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def sweep_jobs(sweep: Path) -> list[Path]:
    """The numbered job folders of a multirun sweep folder, in job order."""
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def psnr_gain(metrics: dict[str, float], split: str = "test") -> float:
    """How many dB the denoised ``split`` images beat the noisy input by (``<split>/psnr - <split>/psnr_noisy``)."""
    return metrics[f"{split}/psnr"] - metrics[f"{split}/psnr_noisy"]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The script failed as bad input should: exit 2, no traceback, exactly one ``error:`` line holding
    every fragment."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error_lines[0]
