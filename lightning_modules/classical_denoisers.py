"""Classical denoising baselines for comparisons: total variation and non-local means (scikit-image), and
BM3D (the ``bm3d`` package: BM3D for gray, CBM3D for colour), the reference of the denoising literature.

Images are numpy float arrays in [0, 1], shaped (H, W) or (H, W, C); ``sigma`` is the Gaussian noise standard
deviation on the same [0, 1] scale (e.g. 25 / 255), or None to estimate it from the image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from imagelab.core.errors import UserError

# TV weight = 1.0 * sigma: in a sweep of 0.4-1.5 x sigma on 4 skimage images at sigma 15, 25, 50 (/255) it was
# within 0.8 dB of the best factor at every level.
TV_WEIGHT_PER_SIGMA = 1.0
# h = 0.8 * sigma as in the scikit-image NL-means example (fast mode, sigma given); the best of 0.6-1.2
# in that sweep.
NLM_H_PER_SIGMA = 0.8


def _prepare(noisy: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Validate an (H, W) / (H, W, C) image; return it as float64 and its channel axis (None for gray)."""
    image = np.asarray(noisy)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise UserError(f"classical denoisers expect an (H, W) or (H, W, C) image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise UserError(f"classical denoisers expect a float image in [0, 1], got dtype {image.dtype}")
    return image.astype(np.float64), (-1 if image.ndim == 3 else None)


def estimate_noise_sigma(image: np.ndarray, channel_axis: int | None = None) -> float:
    """Gaussian noise sigma of an image by the robust wavelet (Donoho) estimator, averaged over channels.

    Same estimator as ``skimage.restoration.estimate_sigma`` (median absolute finest diagonal wavelet
    coefficient / 0.6745) but with the Haar wavelet computed in numpy, so PyWavelets is not needed.
    """
    image = np.asarray(image, dtype=np.float64)
    planes = [image] if channel_axis is None else list(np.moveaxis(image, channel_axis, 0))
    sigmas = []
    for plane in planes:
        h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
        if h == 0 or w == 0:
            raise UserError(f"image too small to estimate its noise level: shape {image.shape}")
        p = plane[:h, :w]
        diagonal = (p[0::2, 0::2] - p[0::2, 1::2] - p[1::2, 0::2] + p[1::2, 1::2]) / 2.0
        sigmas.append(np.median(np.abs(diagonal)) / 0.6744897501960817)
    return float(np.mean(sigmas))


def _sigma(image: np.ndarray, channel_axis: int | None, sigma: float | None) -> float:
    """The given noise level, or ``estimate_noise_sigma`` of the image when None."""
    if sigma is not None:
        if sigma < 0:
            raise UserError(f"noise sigma must be >= 0 on the [0, 1] scale, got {sigma}")
        return float(sigma)
    return estimate_noise_sigma(image, channel_axis)


def _finish(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and return in the input's float dtype."""
    return np.clip(result, 0.0, 1.0).astype(np.asarray(like).dtype, copy=False)


def tv_chambolle(noisy: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Total-variation denoising (Chambolle), weight ``TV_WEIGHT_PER_SIGMA * sigma``; same shape/dtype out."""
    image, channel_axis = _prepare(noisy)
    weight = TV_WEIGHT_PER_SIGMA * _sigma(image, channel_axis, sigma)
    if weight == 0:
        return _finish(image, noisy)
    return _finish(denoise_tv_chambolle(image, weight=weight, channel_axis=channel_axis), noisy)


def nl_means(noisy: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Non-local means (fast mode, 5x5 patches, 13x13 search), ``h = NLM_H_PER_SIGMA * sigma``.

    Returns an array of the input's shape and float dtype, clipped to [0, 1].
    """
    image, channel_axis = _prepare(noisy)
    sig = _sigma(image, channel_axis, sigma)
    if sig == 0:
        return _finish(image, noisy)
    result = denoise_nl_means(
        image,
        h=NLM_H_PER_SIGMA * sig,
        sigma=sig,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        channel_axis=channel_axis,
    )
    return _finish(result, noisy)


def bm3d_denoise(noisy: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """BM3D (Dabov et al., 2007; the ``bm3d`` package, its default "np" profile) with noise std ``sigma``.

    A 3-channel image goes through CBM3D (``bm3d.bm3d_rgb``: grouping on luminance, filtering in the opponent
    colour space); gray images, and each channel of 1- or 4-channel images, through gray BM3D. Returns the
    input's shape and float dtype, clipped to [0, 1]. About 4 s of CPU per 256x256 gray image and 12 s per
    colour one (docs/photos.md).
    """
    # lazy: importing bm3d costs ~3 s (scipy.signal, bm4d), paid only by runs that score this baseline
    import bm3d

    image, channel_axis = _prepare(noisy)
    sig = _sigma(image, channel_axis, sigma)
    if sig == 0:
        return _finish(image, noisy)
    if image.ndim == 3 and image.shape[-1] == 3:
        result = bm3d.bm3d_rgb(image, sig)
    elif image.ndim == 3:
        result = np.stack([bm3d.bm3d(image[..., c], sig) for c in range(image.shape[-1])], axis=-1)
    else:
        result = bm3d.bm3d(image, sig)
    return _finish(np.asarray(result).reshape(image.shape), noisy)


BASELINES: dict[str, Callable[[np.ndarray, float | None], np.ndarray]] = {
    "tv": tv_chambolle,
    "nlm": nl_means,
    "bm3d": bm3d_denoise,
}
REFERENCE_BASELINE = "bm3d"
"""The baseline a learned denoiser is measured against: eval.py marks results below it."""


def below_reference(psnr: float | None, baselines: dict[str, dict[str, float]]) -> str:
    """A table-label suffix ``" (< bm3d -1.23 dB)"`` when ``psnr`` loses to the scored reference baseline, else ""."""
    reference = baselines.get(REFERENCE_BASELINE, {}).get("psnr")
    if psnr is None or reference is None or psnr >= reference:
        return ""
    return f" (< {REFERENCE_BASELINE} {psnr - reference:+.2f} dB)"
