"""scripts/gpu_check.sh --dry-run: the plan, the time budget and every composed config, checked without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dry_run_checks_the_plan_and_the_configs(tmp_path: Path) -> None:
    proc = _run("--dry-run", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = (tmp_path / "out" / "plan.txt").read_text().splitlines()
    steps = [line.split()[2] for line in plan if line.startswith("step ")]
    assert steps == ["install", "gpu_tests", "benchmark", "train", "eval"]
    text = "\n".join(plan)
    assert "pip install -q --no-index --find-links .whl" in text and "pip install -q --no-deps" in text
    assert "hydra-core omegaconf wandb" in text
    assert "-m gpu tests/test_gpu.py" in text and "scripts/benchmark.py mode=gpu" in text
    assert "experiment=denoise_dncnn_s_gpu data=denoise_photos_gpu" in text
    assert "++trainer.max_time=00:00:02:20" in text and "+data.eval_crop=256" in text
    limits = [int(line.split("(limit ")[1].split(" s)")[0]) for line in plan if line.startswith("step ")]
    assert sum(limits) <= 480 and "total of the step limits: 480 s (budget 480 s)" in text
    # every Hydra command composed with --cfg job, and the gpu tests collected
    for check in ("gpu_tests_collect", "cfg_job_benchmark", "cfg_job_train", "cfg_job_eval"):
        assert f"ok      {check}" in proc.stdout, proc.stdout
    assert "dry run: the plan checks out" in proc.stdout
    composed = (tmp_path / "out" / "steps" / "dry_cfg_job_train.log").read_text()
    assert "GPUResidentDenoisingDataModule" in composed and "max_time: 00:00:02:20" in composed
    assert "4 tests collected" in (tmp_path / "out" / "steps" / "dry_gpu_tests_collect.log").read_text()


def test_bad_options_and_an_over_budget_plan_are_refused(tmp_path: Path) -> None:
    proc = _run("--dry-run", "--frobnicate")
    assert proc.returncode == 2 and proc.stdout.strip() == "error: unknown option --frobnicate (see --help)"
    proc = _run("--dry-run", "--out", str(tmp_path / "a"), "--train-seconds", "600")
    assert proc.returncode == 2 and "more than the 480 s budget" in proc.stdout
    proc = _run("--out", str(tmp_path / "b"), "--train-seconds", "3m")
    assert proc.returncode == 2 and "must be a whole number" in proc.stdout
