"""A noise model and a clean-image source defined OUTSIDE the framework, as a user's own module would: each is
one class, picked with one YAML file (``_target_: tests.helpers.data_plugins.<Class>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.clean_sources import CleanSource, ImageItem, Splits, split_indices
from datamodules.noise import NoiseModel


class SpeckleNoise(NoiseModel):
    """Multiplicative Gaussian noise: ``clean * (1 + sigma/255 * N(0, 1))`` (ultrasound / SAR speckle)."""

    def __init__(self, sigma: float = 25.0, clip: bool = False) -> None:
        super().__init__(clip)
        self.sigma = float(sigma)

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``clean`` times one plus Gaussian noise of std sigma / 255."""
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        return clean * (1.0 + self.sigma / 255.0 * noise)


class NpyStackImages(CleanSource):
    """The images of one ``.npy`` stack (N, H, W) or (N, H, W, 3) of uint8/uint16, split by index."""

    def __init__(
        self, path: str, val_fraction: float = 0.25, test_fraction: float = 0.25, seed: int = 0
    ) -> None:
        self.path = Path(path)
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed

    def load(self) -> Splits:
        """Every image of the stack, split with ``split_indices``."""
        stack = np.load(self.path)
        index = split_indices(len(stack), self.val_fraction, self.test_fraction, self.seed, str(self.path))
        return {
            split: [ImageItem(f"{self.path.name}[{i}]", np.ascontiguousarray(stack[i])) for i in idx]
            for split, idx in index.items()
        }
