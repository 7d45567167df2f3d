"""Denoise images too large for memory tile by tile, blending overlapping tiles so no seams appear."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from imagelab.core.errors import UserError


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets covering ``size`` pixels; the last tile ends exactly at the border."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> Tensor:
    """1-D blending weights of one tile side: 0 for ``overlap // 4`` pixels, a raised-cosine ramp, then 1.

    The zero margin discards the pixels next to a tile's inner edges, which a conv net computes from
    padding instead of real neighbours; the cosine ramp fades neighbouring tiles into each other. Sides on
    the image border get no ramp (weight 1) because no other tile covers them.
    """
    weight = torch.ones(length, dtype=torch.float64)
    margin = overlap // 4
    ramp_len = max(1, overlap - 2 * margin)
    pos = torch.arange(length, dtype=torch.float64)
    rise = ((pos - margin + 0.5) / ramp_len).clamp(0.0, 1.0)
    rise = 0.5 - 0.5 * torch.cos(math.pi * rise)
    if ramp_start:
        weight = weight * rise
    if ramp_end:
        weight = weight * rise.flip(0)
    return weight


@torch.no_grad()
def denoise_tiled(
    net_fn: Callable[[Tensor], Tensor],
    image: Tensor,
    tile: int = 256,
    overlap: int = 32,
) -> Tensor:
    """Apply ``net_fn`` to a (C, H, W) image in overlapping ``tile`` x ``tile`` tiles and blend the results.

    ``net_fn`` maps a (1, C, h, w) batch to a (1, C', h, w) batch (e.g. ``DenoiserModule.denoise`` or a
    network in eval mode). Tiles overlap by at least ``overlap`` pixels; in each overlap the first/last
    ``overlap // 4`` pixels of a tile are ignored and the rest is cross-faded with cosine weights, so a net
    whose receptive-field radius is at most ``overlap // 4`` gives exactly its whole-image output (nets with
    pooling, e.g. a UNet, may differ slightly since tiles shift their pooling grid). An image no larger than
    one tile goes through ``net_fn`` whole. Returns a (C', H, W) tensor on the image's device.
    """
    if image.ndim != 3:
        raise UserError(f"denoise_tiled expects one (C, H, W) image, got shape {tuple(image.shape)}")
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise UserError(
            f"tiled inference needs tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}"
        )
    _, height, width = image.shape
    if height <= tile and width <= tile:
        return net_fn(image.unsqueeze(0))[0]

    stride = tile - overlap
    ys, xs = _starts(height, tile, stride), _starts(width, tile, stride)
    output: Tensor | None = None
    weight_sum = torch.zeros(1, height, width, dtype=torch.float64, device=image.device)
    for y in ys:
        th = min(tile, height)
        wy = _ramp(th, overlap, ramp_start=y > 0, ramp_end=y + th < height)
        for x in xs:
            tw = min(tile, width)
            wx = _ramp(tw, overlap, ramp_start=x > 0, ramp_end=x + tw < width)
            out = net_fn(image[:, y : y + th, x : x + tw].unsqueeze(0))[0]
            if output is None:
                output = torch.zeros(out.shape[0], height, width, dtype=torch.float64, device=image.device)
            w = (wy[:, None] * wx[None, :]).to(image.device)
            output[:, y : y + th, x : x + tw] += out.to(torch.float64) * w
            weight_sum[:, y : y + th, x : x + tw] += w
    assert output is not None
    return (output / weight_sum).to(image.dtype)
