"""DDP on CPU (2 gloo processes) through the real script: one run directory, one W&B run, sane metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.runs import psnr_gain, read_metrics, run_script, single_run_dir

pytestmark = pytest.mark.slow  # two DDP processes each start an interpreter and train


def test_ddp_sim_writes_one_run_dir_and_one_wandb_run(tmp_path: Path) -> None:
    run_script("train.py", *FAST_DENOISE, "trainer=ddp_sim", "trainer.max_epochs=1", cwd=tmp_path)
    run_dir = single_run_dir(tmp_path)
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert psnr_gain(metrics["metrics"]) > 0.1, metrics["metrics"]  # 4 steps per rank already denoise
    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1
    logged = {k for row in read_offline_run(runs[0])["history"] for k in row}
    assert "val/psnr" in logged and "test/psnr" in logged
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2  # best + last, written once by rank 0
