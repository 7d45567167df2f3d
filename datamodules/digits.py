"""scikit-learn's handwritten digits (bundled, real data, offline) as a class-folder image set.

``load_digits`` holds 1,797 8 x 8 gray images of the digits 0-9 (16 gray levels, from the UCI optical
recognition of handwritten digits set). ``write_digits_folder`` writes them losslessly as PNG files
``root/<digit>/digit_<index>.png`` (levels 0-16 scaled to 0-255); ``DigitsDataModule`` writes that folder on
first use and then reads it like any user image folder (``ImageFolderDataModule``, split by ratio).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from datamodules.image_folder import ImageFolderDataModule
from datamodules.image_io import write_image
from imagelab.core.atomic import atomic_write_text

DONE_MARKER = ".complete"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8 uint8 in 0-255, labels N int64) of scikit-learn's digits."""
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def write_digits_folder(root: str | os.PathLike[str], limit: int | None = None) -> Path:
    """Write the digits as PNG files in class folders under ``root`` (idempotent; a marker file ends it).

    ``limit`` keeps only the first N images (for tests). Returns ``root``.
    """
    folder = Path(root).expanduser()
    if (folder / DONE_MARKER).is_file():
        return folder
    images, labels = digits_arrays()
    count = len(labels) if limit is None else min(limit, len(labels))
    for i in range(count):
        target = folder / str(int(labels[i])) / f"digit_{i:04d}.png"
        if not target.is_file():
            write_image(target, images[i])
    atomic_write_text(folder / DONE_MARKER, f"{count} images from sklearn.datasets.load_digits\n")
    return folder


class DigitsDataModule(ImageFolderDataModule):
    """``ImageFolderDataModule`` on scikit-learn's digits, written as PNG class folders to ``root`` on first use."""

    def __init__(self, root: str, **kwargs: Any) -> None:
        kwargs.setdefault("channels", 1)
        kwargs.setdefault("image_size", "native")
        super().__init__(root=root, **kwargs)

    def prepare_data(self) -> None:
        """Write the PNG folder once (first process of each node)."""
        write_digits_folder(self.root)

    def setup(self, stage: str | None = None) -> None:
        """Make sure the folder exists (also when ``prepare_data`` was skipped), then load it."""
        if not self.splits:
            write_digits_folder(self.root)
        super().setup(stage)
