"""The BM3D / CBM3D baseline: it beats the noisy input and the other classical baselines, and eval.py marks a
result that loses to it."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from lightning_modules.classical_denoisers import BASELINES, below_reference


def _psnr(clean: np.ndarray, image: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(clean, image, data_range=1.0))


@pytest.mark.parametrize("colour", [False, True])
def test_bm3d_beats_the_noisy_input_and_nlm(colour: bool) -> None:
    clean = data.astronaut()[40:136, 180:276] / 255.0
    clean = clean if colour else clean.mean(axis=-1)
    rng = np.random.default_rng(3)
    noisy = (clean + rng.normal(0.0, 25 / 255, clean.shape)).astype(np.float32)
    out = BASELINES["bm3d"](noisy, 25 / 255)
    assert out.shape == clean.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert _psnr(clean, out) > _psnr(clean, np.clip(noisy, 0, 1)) + 6.0
    assert _psnr(clean, out) > _psnr(clean, BASELINES["nlm"](noisy, 25 / 255)) + 0.3


def test_bm3d_at_sigma_zero_returns_the_input() -> None:
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    np.testing.assert_array_equal(BASELINES["bm3d"](image, 0.0), image)


def test_a_result_below_bm3d_is_marked() -> None:
    scored = {"tv": {"psnr": 27.0}, "bm3d": {"psnr": 29.0}}
    assert below_reference(28.5, scored) == " (< bm3d -0.50 dB)"
    assert below_reference(29.5, scored) == ""
    assert below_reference(28.5, {"tv": {"psnr": 27.0}}) == ""  # bm3d not scored: nothing to compare with
    assert below_reference(None, scored) == ""
