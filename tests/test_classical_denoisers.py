"""Classical baselines (TV, NL-means) raise PSNR on a noisy crop of the skimage camera image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from imagelab.core.errors import UserError
from lightning_modules.classical_denoisers import BASELINES, estimate_noise_sigma

SIGMA = 25 / 255


def _noisy(image: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, SIGMA, image.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return (data.camera()[100:228, 150:278] / 255.0).astype(np.float32)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("known_sigma", [True, False])
def test_baseline_raises_psnr_on_gray(camera: np.ndarray, name: str, known_sigma: bool) -> None:
    noisy = _noisy(camera)
    out = BASELINES[name](noisy, SIGMA if known_sigma else None)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    before = peak_signal_noise_ratio(camera, noisy, data_range=1.0)
    after = peak_signal_noise_ratio(camera, out, data_range=1.0)
    assert after > before + 5.0, (name, before, after)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_raises_psnr_on_colour(name: str) -> None:
    clean = (data.astronaut()[:96, 160:256] / 255.0).astype(np.float32)
    noisy = _noisy(clean, seed=1)
    out = BASELINES[name](noisy, SIGMA)
    assert out.shape == clean.shape
    assert (
        peak_signal_noise_ratio(clean, out, data_range=1.0)
        > peak_signal_noise_ratio(clean, noisy, data_range=1.0) + 5.0
    )


def test_noise_estimate_is_close_to_true_sigma(camera: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    for sigma in (10 / 255, 25 / 255):
        noisy = camera + rng.normal(0.0, sigma, camera.shape)  # unclipped: the estimate should be near sigma
        assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.2)
    assert estimate_noise_sigma(camera) < 5 / 255


@pytest.mark.parametrize(
    ("image", "sigma"),
    [(np.zeros((4, 4, 4, 4), np.float32), 0.1), (np.zeros((8, 8), np.uint8), 0.1), (np.zeros((8, 8)), -1.0)],
)
def test_bad_inputs_are_user_errors(image: np.ndarray, sigma: float) -> None:
    for fn in BASELINES.values():
        with pytest.raises(UserError):
            fn(image, sigma)
