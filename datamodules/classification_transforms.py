"""Image transforms of the classification datamodules (torchvision transforms v2 on uint8 tensors).

Images enter as uint8 (C, H, W) tensors and leave as normalised float32 tensors. Size:

* ``image_size="native"``: kept as stored (e.g. CIFAR-10 at 32 px; all images must share one size);
* ``image_size="backbone"``: resized to the backbone's input size from timm's data config;
* ``image_size=N``: resized to N x N.

Resizing scales the shorter side to the target (then a centre crop for eval; ``crop_pct < 1`` first scales
to ``size / crop_pct`` as timm's ImageNet evaluation does). Augmentation presets for training:

* ``none``: the eval transform;
* ``crop_flip``: random crop after reflect-padding by 1/8 of the size (the CIFAR recipe) + horizontal flip
  (``hflip=False`` for data where mirroring changes the class, e.g. digits);
* ``strong``: crop_flip + RandAugment (2 ops, magnitude 9) or TrivialAugmentWide, then random erasing.

Mean and std come from the backbone's pretrained config (timm) unless given explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from imagelab.core.errors import UserError

AUGMENT_PRESETS: tuple[str, ...] = ("none", "crop_flip", "strong")
STRONG_POLICIES: tuple[str, ...] = ("randaugment", "trivialaugment")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as Pillow's "L" mode


def rgb_to_luma_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, >=3) RGB(A) -> uint8 (..., H, W) gray, rounded as Pillow's "L" conversion."""
    return (x[..., :3].astype(np.float32) @ np.asarray(LUMA, np.float32) + 0.5).clip(0, 255).astype(np.uint8)


def check_image_size(value: Any) -> str | int:
    """Validate ``data.image_size`` (native | backbone | positive int)."""
    if value in ("native", "backbone"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 8:
        return int(value)
    raise UserError(f"data.image_size must be native, backbone or an integer >= 8, got {value!r}")


def to_uint8_chw(array: np.ndarray, channels: int) -> torch.Tensor:
    """Pixels as read ((H, W) or (H, W, 3), uint8 or uint16) -> uint8 tensor (channels, H, W).

    Colour becomes gray by luma weights for ``channels=1``; gray is repeated for ``channels=3``.
    """
    x = np.asarray(array)
    if x.dtype == np.uint16:
        x = ((x.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    elif x.dtype != np.uint8:
        raise UserError(f"images must be 8- or 16-bit, got {x.dtype}")
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if channels == 1 and x.ndim == 3:
        x = rgb_to_luma_uint8(x)
    planes = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    x = np.repeat(planes, 3, axis=0) if planes.shape[0] == 1 and channels == 3 else planes
    return torch.from_numpy(np.ascontiguousarray(x))


def channel_stats(values: Sequence[float], channels: int, what: str) -> list[float]:
    """Per-channel mean/std for ``channels`` from a 1- or 3-value list (3 values averaged for gray data)."""
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if channels == 1:
        return [sum(values) / len(values)]
    raise UserError(f"data.{what} needs {channels} values (one per channel), got {values}")


def build_transform(
    train: bool,
    *,
    size: tuple[int, int],
    native: tuple[int, int] | None,
    augment: str,
    strong_policy: str,
    random_erasing: float,
    hflip: bool = True,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The train (``train=True``, with the ``augment`` preset) or eval transform for uint8 (C, H, W) tensors."""
    mode = v2.InterpolationMode(
        interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    )
    resize = native is None or tuple(native) != tuple(size)
    steps: list[Any] = []
    augment = augment if train else "none"
    if augment == "none":
        if resize:
            steps += [
                v2.Resize(round(min(size) / crop_pct), interpolation=mode, antialias=True),
                v2.CenterCrop(size),
            ]
    else:
        if resize:
            steps.append(v2.Resize(min(size), interpolation=mode, antialias=True))
        steps.append(v2.RandomCrop(size, padding=max(1, min(size) // 8), padding_mode="reflect"))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment == "strong":
            steps.append(
                v2.RandAugment(num_ops=2, magnitude=9)
                if strong_policy == "randaugment"
                else v2.TrivialAugmentWide()
            )
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment == "strong" and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)
