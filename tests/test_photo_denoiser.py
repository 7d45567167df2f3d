"""The colour, blind photo denoiser (``experiment=denoise_photo_color``): it composes, a short run learns in
colour on the bundled photos, the blind model is scored at several noise levels beside BM3D, and denoise.py
keeps a user's 16-bit colour photo as it came."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from datamodules.image_io import read_image, write_image
from imagelab.core.devices import resolve_precision
from imagelab.core.errors import UserError
from tests.helpers.compose import compose
from tests.helpers.in_process import train_in_process

pytestmark = pytest.mark.usefixtures("restore_torch_flags")

# the experiment with a narrow UNet on 32x32 patches, 3 x 256 steps (~40 s of CPU), 64x64 eval crops
SHORT = [
    "experiment=denoise_photo_color",
    "logger=none",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "data.patches_per_epoch=4096",
    "data.patch_size=32",
    "model.net.base_width=16",
    "data.eval_crop=64",
]


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / mse))


def test_the_experiment_is_colour_and_blind_and_leaves_the_default_run_alone() -> None:
    cfg = compose("train", ["experiment=denoise_photo_color"])
    assert cfg.data.channels == 3 and cfg.model.net.channels == 3
    assert list(cfg.data.noise.sigma_range) == [0.0, 55.0]  # trained on sigma drawn per image
    assert (
        cfg.data.eval_noise.sigma == 25.0 and cfg.data.eval_noise.sigma_range is None
    )  # scored at one level
    assert cfg.model.net._target_ == "lightning_modules.networks.unet.UNet"
    default = compose("train", [])
    assert default.data.channels == 1 and default.data.noise.sigma == 25.0
    assert default.data.noise.get("sigma_range") is None and default.model.net.depth == 10


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return train_in_process(tmp_path_factory.mktemp("photo"), *SHORT)


@pytest.mark.slow
def test_a_short_run_learns_in_colour(photo_run: dict) -> None:
    m = photo_run["metrics"]
    # test: camera, astronaut, chelsea in colour at sigma 25 (noisy input ~20.6 dB)
    assert 20.0 < m["test/psnr_noisy"] < 21.5
    assert m["test/psnr"] > m["test/psnr_noisy"] + 2.5
    ckpt = torch.load(photo_run["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["run_config"]["data"]["channels"] == 3
    # precision=auto is recorded as what ran: bf16 autocast on a CPU with AMX, else float32
    assert ckpt["run_config"]["trainer"]["precision"] == resolve_precision("auto", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [15, 50])
def test_the_blind_model_is_scored_at_several_sigma_beside_bm3d(
    photo_run: dict, sigma: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagelab.tasks.evaluation import evaluate

    cfg = compose(
        "eval",
        [
            f"ckpt_path={photo_run['best_checkpoint']}",
            "logger=none",
            "trainer.accelerator=cpu",
            f"+data.eval_noise.sigma={sigma}",
            "+data.eval_crop=48",  # tiny images: BM3D stays fast
            "baselines=[bm3d]",
        ],
        output_dir=tmp_path,
    )
    m = evaluate(cfg)["metrics"]
    table = capsys.readouterr().out
    assert "baseline: bm3d" in table and "model: UNet" in table
    noisy = m["test/psnr_noisy"]
    # the noise really is sigma (clamping the noisy input to [0, 1] raises its PSNR a little at high sigma)
    assert 20 * math.log10(255 / sigma) - 0.1 < noisy < 20 * math.log10(255 / sigma) + 2.0
    assert math.isfinite(m["baseline/bm3d/psnr"]) and math.isfinite(m["baseline/bm3d/ssim"])
    assert m["baseline/bm3d/psnr"] > noisy + 4.0
    # one model, trained blind, gains at every level (a short run least at low noise)
    assert m["test/psnr"] > noisy + (0.8 if sigma < 25 else 1.5)


def _fake_train_run(log_dir: Path, name: str, overrides: list[str], status: str, ckpt: Path | None) -> Path:
    """A training run folder as train.py leaves it: .hydra/overrides.yaml, metrics.json, best.ckpt."""
    run = log_dir / "train" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "metrics.json").write_text(json.dumps({"status": status}))
    if ckpt is not None:
        (run / "checkpoints").mkdir()
        shutil.copy(ckpt, run / "checkpoints" / "best.ckpt")
    return run


def test_without_a_model_denoise_says_how_to_get_the_photo_model(tmp_path: Path) -> None:
    from imagelab.tasks.inference import denoise_files

    write_image(tmp_path / "in" / "photo.png", data.astronaut()[:32, :32])
    _fake_train_run(tmp_path / "logs", "2026-05-01_12-00-00_a1b2c3", ["model=unet"], "completed", None)
    cfg = compose(
        "denoise",
        [f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", f"paths.log_dir={tmp_path / 'logs'}"],
        output_dir=tmp_path,
    )
    with pytest.raises(UserError, match=r"python scripts/train\.py experiment=denoise_photo_color"):
        denoise_files(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_denoise_keeps_a_16_bit_colour_photo_with_the_newest_photo_model_by_default(
    photo_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagelab.tasks.inference import denoise_files

    rng = np.random.default_rng(0)
    clean = data.astronaut()[100:196, 150:278].astype(np.float64) * 257.0
    noisy = np.clip(clean + rng.normal(0, 25 * 257.0, clean.shape), 0, 65535).round().astype(np.uint16)
    write_image(tmp_path / "in" / "photo.png", noisy)
    logs, best = tmp_path / "logs", Path(photo_run["best_checkpoint"])
    photo = ["experiment=denoise_photo_color"]
    chosen = _fake_train_run(logs, "2026-05-01_12-00-00_a1b2c3", photo, "completed", best)
    _fake_train_run(logs, "2026-05-02_12-00-00_d4e5f6", photo, "failed", best)  # newer, but failed
    _fake_train_run(logs, "2026-05-03_12-00-00_0a1b2c", [], "completed", best)  # newer, not the photo model
    cfg = compose(
        "denoise",
        [f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "device=cpu", f"paths.log_dir={logs}"],
        output_dir=tmp_path,
    )
    denoise_files(cfg)
    assert f"using the newest photo model: {chosen / 'checkpoints' / 'best.ckpt'}" in capsys.readouterr().out
    out = read_image(tmp_path / "out" / "photo.png")
    assert out.dtype == np.uint16 and out.shape == noisy.shape
    assert _psnr(out, clean, 65535.0) > _psnr(noisy, clean, 65535.0) + 2.5
