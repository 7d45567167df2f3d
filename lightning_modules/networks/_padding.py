"""Pad images to a multiple of a network's stride and crop them back, so networks accept any H x W."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad a (B, C, H, W) batch on the bottom/right so H and W are multiples of ``multiple``.

    Uses reflect padding (no artificial edges); falls back to replicate padding when the image is too small
    for reflection (reflect needs pad < size). Returns the padded batch and the original (H, W) for
    ``crop_to``.
    """
    h, w = x.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop a (B, C, H', W') batch back to the top-left ``size`` = (H, W) removed by ``pad_to_multiple``."""
    h, w = size
    return x[..., :h, :w]
