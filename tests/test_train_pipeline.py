"""End to end through the real scripts: train on the bundled photos, read back W&B, eval, denoise files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.runs import read_metrics, run_script, single_run_dir

pytestmark = (
    pytest.mark.slow
)  # every test reads a denoiser trained through scripts/train.py or starts a script

# A few hundred optimiser steps of a small DnCNN: enough to beat the noisy input clearly.
TRAIN = [
    *FAST_DENOISE,
    "trainer.max_epochs=3",
    "data.patches_per_epoch=1536",
    "data.batch_size=16",
    "tags=[pytest]",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("train")
    proc = run_script("train.py", *TRAIN, cwd=root)
    run_dir = single_run_dir(root)
    metrics = read_metrics(run_dir)
    return {"root": root, "run_dir": run_dir, "stdout": proc.stdout, "metrics": metrics}


def test_run_directory_is_complete(trained: dict) -> None:
    run_dir, metrics = trained["run_dir"], trained["metrics"]
    assert metrics["status"] == "completed" and metrics["error"] is None
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (
        run_dir / ".hydra" / "overrides.yaml"
    ).is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert Path(metrics["best_checkpoint"]).is_file()
    assert metrics["objective"]["metric"] == "val/psnr" and metrics["objective"]["mode"] == "max"
    assert not list(run_dir.rglob("*.tmp*")), "temporary files left behind"


def test_denoiser_learns_on_the_sample_photos(trained: dict) -> None:
    m = trained["metrics"]["metrics"]
    # σ=25 noisy input is ≈ 20.2 dB; the trained network must clearly beat it on unseen images.
    assert 19.5 < m["val/psnr_noisy"] < 21.0
    assert m["val/psnr"] > m["val/psnr_noisy"] + 3.0
    assert m["test/psnr"] > m["test/psnr_noisy"] + 3.0
    assert m["val/psnr_best"] >= m["val/psnr"] - 1e-6
    assert trained["metrics"]["objective"]["best"] == pytest.approx(m["val/psnr_best"], abs=1e-4)


def test_checkpoint_loads_with_weights_only_and_carries_its_config(trained: dict) -> None:
    import torch

    ckpt = torch.load(trained["metrics"]["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["run_config"]["model"]["net"]["_target_"] == "lightning_modules.networks.dncnn.DnCNN"
    assert ckpt["run_config"]["data"]["noise"]["sigma"] == 25
    assert ckpt["hyper_parameters"]["net"]["depth"] == 5


def test_wandb_offline_run_holds_metrics_config_and_panels(trained: dict) -> None:
    runs = find_offline_runs(trained["run_dir"])
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    assert run["run"]["job_type"] == "train" and "pytest" in run["run"]["tags"]
    assert run["config"]["model"]["net"]["depth"] == 5
    assert run["config"]["paths"]["output_dir"] == str(trained["run_dir"])
    assert run["config"]["model/params_trainable"] > 0
    logged = {k for row in run["history"] for k in row}
    assert {"train/loss", "val/psnr", "val/ssim", "val/psnr_noisy", "val/psnr_best"} <= logged
    panels = [row for row in run["history"] if row.get("val/panels/_type") == "images/separated"]
    assert len(panels) == 3 and panels[0]["val/panels/count"] == 2  # every epoch, both validation images
    media = runs[0] / "files" / panels[-1]["val/panels/filenames"][0]
    assert media.is_file() and media.stat().st_size > 1000
    psnr_rows = [row["val/psnr"] for row in run["history"] if "val/psnr" in row]
    assert len(psnr_rows) == 3  # one per epoch
    assert run["summary"]["test/psnr"] == pytest.approx(trained["metrics"]["metrics"]["test/psnr"], abs=1e-4)
    assert "wandb sync" in trained["stdout"] and str(runs[0]) in trained["stdout"]


def test_eval_reproduces_the_test_metric_from_the_checkpoint_alone(trained: dict, tmp_path: Path) -> None:
    ckpt = trained["metrics"]["best_checkpoint"]
    proc = run_script("eval.py", f"ckpt_path={ckpt}", "logger=none", cwd=tmp_path)
    evaluated = read_metrics(single_run_dir(tmp_path, "eval"))["metrics"]
    train_test = trained["metrics"]["metrics"]
    assert evaluated["test/psnr"] == pytest.approx(train_test["test/psnr"], abs=1e-4)
    assert evaluated["test/psnr_noisy"] == pytest.approx(train_test["test/psnr_noisy"], abs=1e-4)
    for name in ("noisy input", "baseline: tv", "baseline: nlm", "model: DnCNN"):
        assert name in proc.stdout
    # the classical baselines denoise too (better than the noisy input)
    assert evaluated["baseline/tv/psnr"] > evaluated["test/psnr_noisy"]
    assert evaluated["baseline/nlm/psnr"] > evaluated["test/psnr_noisy"]


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / mse))


def test_denoise_script_keeps_names_depth_and_channels(trained: dict, tmp_path: Path) -> None:
    from skimage import data

    from datamodules.image_io import read_image, write_image

    rng = np.random.default_rng(0)
    clean8 = data.camera()[100:300, 150:420]
    noisy8 = np.clip(clean8 + rng.normal(0, 25, clean8.shape), 0, 255).round().astype(np.uint8)
    clean16 = clean8.astype(np.uint16) * 257
    noisy16 = np.clip(clean16 + rng.normal(0, 25 * 257, clean16.shape), 0, 65535).round().astype(np.uint16)
    rgb16 = np.stack([noisy16, noisy16[::-1], noisy16[:, ::-1]], axis=-1)
    inputs = tmp_path / "in"
    write_image(inputs / "gray8.png", noisy8)
    write_image(inputs / "deep" / "gray16.png", noisy16)
    write_image(inputs / "rgb16.tif", rgb16)
    out = tmp_path / "out"
    ckpt = trained["metrics"]["best_checkpoint"]
    run_script(
        "denoise.py",
        f"ckpt_path={ckpt}",
        f"input={inputs}",
        f"output={out}",
        "tile=128",
        "overlap=16",
        cwd=tmp_path,
    )
    gray8, gray16, color16 = (read_image(out / n) for n in ("gray8.png", "deep/gray16.png", "rgb16.tif"))
    assert gray8.dtype == np.uint8 and gray8.shape == clean8.shape
    assert gray16.dtype == np.uint16 and gray16.shape == clean16.shape
    assert color16.dtype == np.uint16 and color16.shape == rgb16.shape
    assert _psnr(gray8, clean8, 255) > _psnr(noisy8, clean8, 255) + 3
    assert _psnr(gray16, clean16, 65535) > _psnr(noisy16, clean16, 65535) + 3
    # refuses to write over its inputs, and over existing results unless asked
    refused = run_script(
        "denoise.py", f"ckpt_path={ckpt}", f"input={inputs}", f"output={inputs}", cwd=tmp_path, check=False
    )
    assert refused.returncode == 2 and "overwrite the input" in refused.stderr
    again = run_script(
        "denoise.py", f"ckpt_path={ckpt}", f"input={inputs}", f"output={out}", cwd=tmp_path, check=False
    )
    assert again.returncode == 2 and "already exists" in again.stderr


def test_fast_dev_run_without_any_logger(tmp_path: Path) -> None:
    proc = run_script("train.py", "debug=fast_dev_run", "logger=none", cwd=tmp_path)
    run_dir = single_run_dir(tmp_path, "debug")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["wandb"] is None
    assert "test/psnr" in metrics["metrics"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("psnr ")}
    assert float(rows["psnr"][-1]) == pytest.approx(
        metrics["metrics"]["test/psnr"], abs=1e-3
    )  # results table
    assert not find_offline_runs(tmp_path)
