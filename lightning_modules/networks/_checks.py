"""Argument checks shared by the denoising networks."""

from __future__ import annotations

from typing import Any

from imagelab.core.plain_config import check_int


def check_channels(channels: Any) -> int:
    """``channels`` if it is a positive int (1 = grayscale, 3 = colour), else a UserError."""
    return check_int("channels (1 = grayscale, 3 = colour)", channels, 1)
