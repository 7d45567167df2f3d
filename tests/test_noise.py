"""Synthetic noise models (datamodules.noise): levels, per-image sigma, impulse fraction, shot noise, and a
new model as one class plus one YAML file."""

from __future__ import annotations

import pytest
import torch

from datamodules.noise import GaussianNoise, PoissonGaussianNoise, SaltPepperNoise, build_noise
from imagelab.core.errors import UserError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_std_matches_sigma_and_is_not_clipped():
    clean = torch.full((1, 256, 256), 0.5)
    noise = build_noise({"_target_": "datamodules.noise.GaussianNoise", "sigma": 25, "sigma_range": None})
    assert isinstance(noise, GaussianNoise)
    noisy = noise(clean, _gen())
    residual = noisy - clean
    assert abs(residual.std().item() - 25 / 255) < 0.002
    assert abs(residual.mean().item()) < 0.002
    assert noisy.dtype == torch.float32 and noisy.shape == clean.shape
    black = noise(torch.zeros(1, 64, 64), _gen())
    assert black.min() < 0  # DnCNN convention: no clipping by default
    clipped = build_noise({"_target_": "datamodules.noise.GaussianNoise", "sigma": 25, "clip": True})(
        torch.zeros(1, 64, 64), _gen()
    )
    assert clipped.min() == 0


def test_gaussian_is_reproducible_with_a_seeded_generator():
    noise = build_noise({"_target_": "datamodules.noise.GaussianNoise", "sigma": 15})
    clean = torch.rand(3, 16, 16)
    assert torch.equal(noise(clean, _gen(5)), noise(clean, _gen(5)))
    assert not torch.equal(noise(clean, _gen(5)), noise(clean, _gen(6)))


def test_sigma_range_draws_per_image_within_bounds():
    noise = build_noise({"_target_": "datamodules.noise.GaussianNoise", "sigma": 25, "sigma_range": [5, 50]})
    g = _gen(3)
    clean = torch.zeros(1, 128, 128)
    stds = [(noise(clean, g) - clean).std().item() * 255 for _ in range(12)]
    assert all(4 < s < 51 for s in stds)
    assert max(stds) - min(stds) > 10  # differs per image
    sigmas = [noise.draw_sigma(g) for _ in range(200)]
    assert min(sigmas) >= 5 and max(sigmas) <= 50


def test_salt_pepper_fraction():
    noise = build_noise(
        {"_target_": "datamodules.noise.SaltPepperNoise", "amount": 0.2, "salt_vs_pepper": 0.25}
    )
    assert isinstance(noise, SaltPepperNoise)
    clean = torch.full((3, 200, 200), 0.5)
    noisy = noise(clean, _gen())
    salt = (noisy == 1).float().mean().item()
    pepper = (noisy == 0).float().mean().item()
    assert abs(salt + pepper - 0.2) < 0.01
    assert abs(salt - 0.05) < 0.01
    assert ((noisy == 0.5) | (noisy == 0) | (noisy == 1)).all()


def test_poisson_gaussian_preserves_mean_and_has_shot_noise_variance():
    noise = build_noise({"_target_": "datamodules.noise.PoissonGaussianNoise", "peak": 20})
    assert isinstance(noise, PoissonGaussianNoise)
    for level in (0.1, 0.6):
        clean = torch.full((1, 300, 300), level)
        noisy = noise(clean, _gen())
        assert abs(noisy.mean().item() - level) < 0.01
        assert abs(noisy.var().item() - level / 20) < 0.1 * level / 20  # Var = clean / peak
    with_read = build_noise({"_target_": "datamodules.noise.PoissonGaussianNoise", "peak": 20, "sigma": 10})
    clean = torch.full((1, 300, 300), 0.5)
    expected = 0.5 / 20 + (10 / 255) ** 2
    assert abs(with_read(clean, _gen()).var().item() - expected) < 0.1 * expected


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"_target_": "datamodules.noise.SpeckleNoise"}, "SpeckleNoise"),
        ({"sigma": 25}, "_target_"),
        ({"_target_": "datamodules.clean_sources.SkimagePhotos"}, "not a NoiseModel"),
        ({"_target_": "datamodules.noise.GaussianNoise", "sigma": -1}, "sigma"),
        ({"_target_": "datamodules.noise.GaussianNoise", "sigma": None}, "sigma"),
        ({"_target_": "datamodules.noise.GaussianNoise", "sigma_range": [30, 10]}, "lo <= hi"),
        ({"_target_": "datamodules.noise.GaussianNoise", "sigma_range": 5}, "sigma_range"),
        ({"_target_": "datamodules.noise.PoissonGaussianNoise", "peak": 0}, "peak"),
        ({"_target_": "datamodules.noise.SaltPepperNoise", "amount": 1.5}, "amount"),
        ({"_target_": "datamodules.noise.SaltPepperNoise", "amount": 0.1, "sigma": 25}, "sigma"),
        ({"_target_": "datamodules.noise.GaussianNoise", "sigma": 25, "clip": "yes"}, "clip"),
        ("gaussian", "_target_"),
    ],
)
def test_bad_configs_raise_user_error(cfg, match):
    with pytest.raises(UserError, match=match):
        build_noise(cfg)


def test_default_is_gaussian_25():
    noise = build_noise(None)
    assert isinstance(noise, GaussianNoise) and noise.sigma == 25
