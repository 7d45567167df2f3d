"""Argument checks shared by the denoising networks."""

from __future__ import annotations

from typing import Any


def check_channels(channels: Any) -> int:
    """``channels`` if it is a positive int (1 = grayscale, 3 = colour), else ValueError."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int (1 = grayscale, 3 = colour), got {channels!r}")
    return channels
