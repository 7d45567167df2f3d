"""Noise models that turn a clean float image in [0, 1] of shape (C, H, W) into a synthetic noisy one.

Every model is a ``NoiseModel``: called as ``noise(clean, generator) -> noisy`` with a ``torch.Generator`` (or
None for torch's global generator), so val/test noise can be made bit-identical by seeding the generator.
Noise levels use the 0-255 scale of the denoising literature (sigma=25 means a standard deviation of 25/255).
Every model takes ``clip: bool`` (default false: values may leave [0, 1], the DnCNN convention).

The config picks a model by ``_target_`` (presets in ``conf/data/noise/``):

* ``GaussianNoise(sigma=25)``: additive white Gaussian noise. With ``sigma_range: [lo, hi]`` (which takes
  precedence over ``sigma``) sigma is drawn uniformly per image (blind denoising).
* ``PoissonGaussianNoise(peak=30, sigma=0)``: shot noise with ``peak`` expected photons at white
  (``Poisson(peak * clean) / peak``) plus Gaussian read noise ``sigma`` (0-255 scale).
* ``SaltPepperNoise(amount=0.05, salt_vs_pepper=0.5)``: a fraction ``amount`` of the values (each channel
  independently, like skimage.util.random_noise) is set to 1 (salt) or 0 (pepper).

A new model is one ``NoiseModel`` subclass implementing ``sample`` plus one YAML file with its ``_target_``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch

from imagelab.config.instantiation import build_instance
from imagelab.core.errors import UserError

DEFAULT_NOISE: dict[str, Any] = {"_target_": "datamodules.noise.GaussianNoise", "sigma": 25.0}
"""The noise of a data module built without one (conf/data/noise/gaussian.yaml)."""


def check_number(
    what: str, key: str, value: Any, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a float when it is a finite number in the range, else UserError naming ``what``/``key``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        hi = "" if high == math.inf else f" and <= {high:g}"
        raise UserError(f"noise {what}: {key} must be a number {lo}{hi}, got {value!r}")
    return value


class NoiseModel(ABC):
    """The interface of a synthetic noise model: ``sample`` draws noisy values, ``clip`` keeps them in [0, 1].

    Subclasses draw every random number from the generator they are given (the fixed val/test noise relies
    on it) and override ``batch`` when they draw something per image (see ``GaussianNoise``).
    """

    def __init__(self, clip: bool = False) -> None:
        if not isinstance(clip, bool):
            raise UserError(f"noise {type(self).__name__}: clip must be true or false, got {clip!r}")
        self.clip = clip

    @abstractmethod
    def sample(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Noisy version of one (C, H, W) image, before clipping."""

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy version of one (C, H, W) image (clipped to [0, 1] when ``clip``)."""
        noisy = self.sample(clean, generator)
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def batch(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Noisy version of a (B, C, H, W) batch in one call, with one draw per image where the model draws per
        image (used by the GPU-resident data path). Element-wise models need no override."""
        return self(clean, generator)

    def known_sigma(self) -> float | None:
        """The Gaussian noise std on the [0, 1] scale when it is fixed and known (classical baselines use it),
        else None (they estimate it)."""
        return None


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise, fixed sigma or sigma drawn per image from a range (0-255 scale)."""

    def __init__(
        self, sigma: float | None = None, sigma_range: tuple[float, float] | None = None, clip: bool = False
    ) -> None:
        super().__init__(clip)
        if sigma_range is not None:
            if not isinstance(sigma_range, (list, tuple)) or len(sigma_range) != 2:
                raise UserError(f"noise gaussian: sigma_range must be [lo, hi], got {sigma_range!r}")
            lo = check_number("gaussian", "sigma_range[0]", sigma_range[0], 0.0)
            hi = check_number("gaussian", "sigma_range[1]", sigma_range[1], 0.0)
            if hi < lo:
                raise UserError(
                    f"noise gaussian: sigma_range [lo, hi] needs lo <= hi, got {list(sigma_range)}"
                )
            self.sigma_range: tuple[float, float] | None = (lo, hi)
            self.sigma: float | None = None
        elif sigma is None:
            raise UserError("noise gaussian: set sigma (0-255 scale, e.g. 25) or sigma_range: [lo, hi]")
        else:
            self.sigma = check_number("gaussian", "sigma", sigma, 0.0)
            self.sigma_range = None

    def draw_sigma(self, generator: torch.Generator | None = None) -> float:
        """The sigma (0-255 scale) for one image: fixed, or uniform in ``sigma_range``."""
        if self.sigma_range is None:
            assert self.sigma is not None
            return self.sigma
        lo, hi = self.sigma_range
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``clean`` plus Gaussian noise of this image's sigma / 255."""
        sigma = self.draw_sigma(generator) / 255.0
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        return clean + sigma * noise

    def batch(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Like ``__call__`` on each image, with a sigma drawn per image of the batch (blind denoising)."""
        if self.sigma_range is None:
            return self(clean, generator)
        lo, hi = self.sigma_range
        shape = (clean.shape[0],) + (1,) * (clean.ndim - 1)
        sigma = lo + (hi - lo) * torch.rand(
            shape, generator=generator, device=clean.device, dtype=clean.dtype
        )
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = clean + (sigma / 255.0) * noise
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def known_sigma(self) -> float | None:
        """sigma / 255 when sigma is fixed; None for a sigma range."""
        return None if self.sigma is None else self.sigma / 255.0

    def __repr__(self) -> str:
        level = f"sigma_range={list(self.sigma_range)}" if self.sigma_range else f"sigma={self.sigma:g}"
        return f"GaussianNoise({level}, clip={self.clip})"


class PoissonGaussianNoise(NoiseModel):
    """Shot noise with ``peak`` photons at white, plus Gaussian read noise ``sigma`` on the 0-255 scale."""

    def __init__(self, peak: float = 30.0, sigma: float = 0.0, clip: bool = False) -> None:
        super().__init__(clip)
        self.peak = check_number("poisson_gaussian", "peak", peak, 0.0, low_open=True)
        self.sigma = check_number("poisson_gaussian", "sigma", sigma, 0.0)

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``Poisson(peak * clean) / peak + N(0, sigma/255)``; the mean equals ``clean``."""
        rate = clean.clamp(min=0.0) * self.peak
        noisy = torch.poisson(rate, generator=generator) / self.peak
        if self.sigma > 0:
            noisy = noisy + (self.sigma / 255.0) * torch.randn(
                clean.shape, generator=generator, dtype=clean.dtype, device=clean.device
            )
        return noisy.to(clean.dtype)

    def __repr__(self) -> str:
        return f"PoissonGaussianNoise(peak={self.peak:g}, sigma={self.sigma:g}, clip={self.clip})"


class SaltPepperNoise(NoiseModel):
    """Impulse noise: a fraction ``amount`` of the values becomes 1 (salt, share ``salt_vs_pepper``) or 0."""

    def __init__(self, amount: float = 0.05, salt_vs_pepper: float = 0.5, clip: bool = False) -> None:
        super().__init__(clip)
        self.amount = check_number("salt_pepper", "amount", amount, 0.0, 1.0)
        self.salt_vs_pepper = check_number("salt_pepper", "salt_vs_pepper", salt_vs_pepper, 0.0, 1.0)

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A copy of ``clean`` with random values replaced by 0 or 1."""
        hit = torch.rand(clean.shape, generator=generator, device=clean.device) < self.amount
        salt = torch.rand(clean.shape, generator=generator, device=clean.device) < self.salt_vs_pepper
        noisy = clean.clone()
        noisy[hit & salt] = 1.0
        noisy[hit & ~salt] = 0.0
        return noisy

    def __repr__(self) -> str:
        return f"SaltPepperNoise(amount={self.amount:g}, salt_vs_pepper={self.salt_vs_pepper:g})"


def build_noise(node: Any, what: str = "data.noise") -> NoiseModel:
    """The ``NoiseModel`` of a ``_target_`` config node (or a model as is); None = ``DEFAULT_NOISE``."""
    return build_instance(DEFAULT_NOISE if node is None else node, NoiseModel, what)
