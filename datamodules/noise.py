"""Noise models that turn a clean float image in [0, 1] of shape (C, H, W) into a synthetic noisy one.

Every model is called as ``noise(clean, generator) -> noisy`` with a ``torch.Generator`` (or None for torch's
global generator), so val/test noise can be made bit-identical by seeding the generator. Noise levels use
the 0-255 scale of the denoising literature (sigma=25 means a standard deviation of 25/255).

Config dicts (``build_noise``), all with an optional ``clip: bool`` (default false: values may leave [0, 1],
the DnCNN convention):

* ``{"kind": "gaussian", "sigma": 25}``: additive white Gaussian noise. With ``sigma_range: [lo, hi]``
  (which takes precedence over ``sigma``) sigma is drawn uniformly per image (blind denoising).
* ``{"kind": "poisson_gaussian", "peak": 30, "sigma": 0}``: shot noise with ``peak`` expected photons at
  white (``Poisson(peak * clean) / peak``) plus Gaussian read noise ``sigma`` (0-255 scale).
* ``{"kind": "salt_pepper", "amount": 0.05, "salt_vs_pepper": 0.5}``: a fraction ``amount`` of the values
  (each channel independently, like skimage.util.random_noise) is set to 1 (salt) or 0 (pepper).
Keys set to null are ignored, so a Hydra override can switch ``kind`` while leaving the other defaults null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from experiment_utils.errors import UserError

NOISE_KINDS: tuple[str, ...] = ("gaussian", "poisson_gaussian", "salt_pepper")
"""The values accepted for ``noise.kind``."""


def _number(
    kind: str, key: str, value: Any, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        hi = "" if high == math.inf else f" and <= {high:g}"
        raise UserError(f"noise {kind}: {key} must be a number {lo}{hi}, got {value!r}")
    return value


class GaussianNoise:
    """Additive white Gaussian noise, fixed sigma or sigma drawn per image from a range (0-255 scale)."""

    def __init__(
        self, sigma: float | None = None, sigma_range: tuple[float, float] | None = None, clip: bool = False
    ) -> None:
        if sigma_range is not None:
            if not isinstance(sigma_range, (list, tuple)) or len(sigma_range) != 2:
                raise UserError(f"noise gaussian: sigma_range must be [lo, hi], got {sigma_range!r}")
            lo = _number("gaussian", "sigma_range[0]", sigma_range[0], 0.0)
            hi = _number("gaussian", "sigma_range[1]", sigma_range[1], 0.0)
            if hi < lo:
                raise UserError(
                    f"noise gaussian: sigma_range [lo, hi] needs lo <= hi, got {list(sigma_range)}"
                )
            self.sigma_range: tuple[float, float] | None = (lo, hi)
            self.sigma: float | None = None
        elif sigma is None:
            raise UserError("noise gaussian: set sigma (0-255 scale, e.g. 25) or sigma_range: [lo, hi]")
        else:
            self.sigma = _number("gaussian", "sigma", sigma, 0.0)
            self.sigma_range = None
        self.clip = bool(clip)

    def draw_sigma(self, generator: torch.Generator | None = None) -> float:
        """The sigma (0-255 scale) for one image: fixed, or uniform in ``sigma_range``."""
        if self.sigma_range is None:
            assert self.sigma is not None
            return self.sigma
        lo, hi = self.sigma_range
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return ``clean`` plus Gaussian noise of this image's sigma / 255."""
        sigma = self.draw_sigma(generator) / 255.0
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        noisy = clean + sigma * noise
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def __repr__(self) -> str:
        level = f"sigma_range={list(self.sigma_range)}" if self.sigma_range else f"sigma={self.sigma:g}"
        return f"GaussianNoise({level}, clip={self.clip})"


class PoissonGaussianNoise:
    """Shot noise with ``peak`` photons at white, plus Gaussian read noise ``sigma`` on the 0-255 scale."""

    def __init__(self, peak: float = 30.0, sigma: float = 0.0, clip: bool = False) -> None:
        self.peak = _number("poisson_gaussian", "peak", peak, 0.0, low_open=True)
        self.sigma = _number("poisson_gaussian", "sigma", sigma, 0.0)
        self.clip = bool(clip)

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return ``Poisson(peak * clean) / peak + N(0, sigma/255)``; the mean equals ``clean``."""
        rate = clean.clamp(min=0.0) * self.peak
        noisy = torch.poisson(rate, generator=generator) / self.peak
        if self.sigma > 0:
            noisy = noisy + (self.sigma / 255.0) * torch.randn(
                clean.shape, generator=generator, dtype=clean.dtype, device=clean.device
            )
        noisy = noisy.to(clean.dtype)
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def __repr__(self) -> str:
        return f"PoissonGaussianNoise(peak={self.peak:g}, sigma={self.sigma:g}, clip={self.clip})"


class SaltPepperNoise:
    """Impulse noise: a fraction ``amount`` of the values becomes 1 (salt, share ``salt_vs_pepper``) or 0."""

    def __init__(self, amount: float = 0.05, salt_vs_pepper: float = 0.5, clip: bool = False) -> None:
        self.amount = _number("salt_pepper", "amount", amount, 0.0, 1.0)
        self.salt_vs_pepper = _number("salt_pepper", "salt_vs_pepper", salt_vs_pepper, 0.0, 1.0)
        self.clip = bool(clip)

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return a copy of ``clean`` with random values replaced by 0 or 1."""
        hit = torch.rand(clean.shape, generator=generator, device=clean.device) < self.amount
        salt = torch.rand(clean.shape, generator=generator, device=clean.device) < self.salt_vs_pepper
        noisy = clean.clone()
        noisy[hit & salt] = 1.0
        noisy[hit & ~salt] = 0.0
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def __repr__(self) -> str:
        return f"SaltPepperNoise(amount={self.amount:g}, salt_vs_pepper={self.salt_vs_pepper:g})"


NoiseModel = GaussianNoise | PoissonGaussianNoise | SaltPepperNoise

_CLASSES: dict[str, type] = {
    "gaussian": GaussianNoise,
    "poisson_gaussian": PoissonGaussianNoise,
    "salt_pepper": SaltPepperNoise,
}
_KEYS: dict[str, tuple[str, ...]] = {
    "gaussian": ("sigma", "sigma_range", "clip"),
    "poisson_gaussian": ("peak", "sigma", "clip"),
    "salt_pepper": ("amount", "salt_vs_pepper", "clip"),
}


def build_noise(cfg: Mapping[str, Any] | None) -> NoiseModel:
    """Build a noise model from a config dict with ``kind`` (one of ``NOISE_KINDS``) and its parameters.

    None means the default, Gaussian sigma=25. Keys whose value is null are ignored; an unknown kind, an
    unknown key or a bad value raises UserError.
    """
    if cfg is None:
        cfg = {"kind": "gaussian", "sigma": 25.0}
    if not isinstance(cfg, Mapping):
        raise UserError(f"noise must be a dict with a 'kind' (one of {', '.join(NOISE_KINDS)}), got {cfg!r}")
    kind = cfg.get("kind")
    if kind not in _CLASSES:
        raise UserError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    params = {str(k): v for k, v in cfg.items() if k != "kind" and v is not None}
    unknown = sorted(set(params) - set(_KEYS[kind]))
    if unknown:
        raise UserError(
            f"noise {kind}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_KEYS[kind])}"
        )
    if "sigma_range" in params:
        params["sigma_range"] = tuple(params["sigma_range"]) if _is_seq(params["sigma_range"]) else None
        if params["sigma_range"] is None:
            raise UserError(f"noise gaussian: sigma_range must be [lo, hi], got {cfg.get('sigma_range')!r}")
    if "clip" in params and not isinstance(params["clip"], bool):
        raise UserError(f"noise {kind}: clip must be true or false, got {params['clip']!r}")
    return _CLASSES[kind](**params)


def _is_seq(value: Any) -> bool:
    return (
        not isinstance(value, (str, bytes, Mapping))
        and hasattr(value, "__len__")
        and hasattr(value, "__iter__")
    )
