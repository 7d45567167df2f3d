"""Classical denoisers scored beside a trained one by ``scripts/eval.py`` (``baselines=[tv,nlm,bm3d]``)."""

from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import Any

import numpy as np
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from imagelab.core.errors import UserError
from lightning_modules.classical_denoisers import BASELINES

log = logging.getLogger(__name__)
OPTIONAL_PACKAGES = {"bm3d": "bm3d"}  # baseline -> the package it needs (an optional extra)


def known_sigma(datamodule: Any) -> float | None:
    """σ on the [0, 1] scale when the test noise is Gaussian with a fixed σ, else None (baselines estimate it)."""
    noise = getattr(datamodule, "eval_noise", None)
    return noise.known_sigma() if noise is not None else None


def score_baselines(datamodule: Any, names: list[str], sigma: float | None) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of each classical denoiser in ``names`` on the datamodule's (noisy, clean) test images.

    A baseline whose optional package is not installed (``bm3d``: the ``baselines`` extra) is left out with a
    one-line note saying how to install it.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise UserError(f"unknown baselines {unknown}: choose from {sorted(BASELINES)}")
    for name in [n for n in names if n in OPTIONAL_PACKAGES and find_spec(OPTIONAL_PACKAGES[n]) is None]:
        log.warning(
            "baseline %s left out: the %s package is not installed (pip install 'imagelab[baselines]', "
            "free for non-commercial use)",
            name,
            OPTIONAL_PACKAGES[name],
        )
        names = [n for n in names if n != name]
    metrics = {
        n: (
            PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            StructuralSimilarityIndexMeasure(data_range=1.0),
        )
        for n in names
    }
    for noisy, clean in datamodule.test_dataloader():
        for noisy_img, clean_img in zip(noisy, clean, strict=True):
            array = noisy_img.clamp(0, 1).permute(1, 2, 0).numpy()
            array = array[..., 0] if array.shape[-1] == 1 else array
            for name in names:
                out = np.asarray(BASELINES[name](array, sigma), dtype=np.float32)
                out_t = (
                    torch.from_numpy(out.reshape(array.shape)).reshape(*array.shape[:2], -1).permute(2, 0, 1)
                )
                psnr, ssim = metrics[name]
                psnr.update(out_t[None].clamp(0, 1), clean_img[None])
                ssim.update(out_t[None].clamp(0, 1), clean_img[None])
    return {n: {"psnr": float(p.compute()), "ssim": float(s.compute())} for n, (p, s) in metrics.items()}
