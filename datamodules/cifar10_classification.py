"""CIFAR-10 classification: the official cifar-10-python files through ``datamodules.cifar10_reader``.

train/val: the official 50k training images split per class with a fixed seed (``val_size`` images for
validation, about ``val_size / 10`` per class); test: the official 10k test batch. ``max_train_images`` and
``max_test_images`` take class-balanced subsets for quick CPU runs. Size, augmentation, normalisation and
mixup are the shared options of ``datamodules.classification.ClassificationDataModule``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodules.cifar10_reader import read_cifar10
from datamodules.classification import (
    ClassificationDataModule,
    SplitData,
    stratified_split,
    subset,
)
from datamodules.loaders import check_int
from imagelab.core.errors import UserError


def _balanced_cap(split: SplitData, cap: int | None, seed: int) -> SplitData:
    """A class-balanced subset of about ``cap`` images (the whole split when ``cap`` is None or larger)."""
    if cap is None or cap >= len(split):
        return split
    _, taken = stratified_split(split.labels, cap / len(split), seed)
    return subset(split, taken)


class CIFAR10ClassificationDataModule(ClassificationDataModule):
    """CIFAR-10 (32 x 32 RGB, 10 classes) from ``root/cifar-10-batches-py``, downloaded there when allowed.

    Args beyond the shared ones: ``root`` (folder holding ``cifar-10-batches-py/``), ``download`` (fetch the
    archive when missing; fails fast offline), ``val_size`` (validation images taken from the official
    training set), ``split_seed``, ``max_train_images``/``max_test_images`` (null = all).
    """

    def __init__(
        self,
        root: str,
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        max_train_images: int | None = None,
        max_test_images: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int("val_size", val_size, 1)
        check_int("split_seed", split_seed, 0)
        check_int("max_train_images", max_train_images, 2, allow_none=True)
        check_int("max_test_images", max_test_images, 1, allow_none=True)
        self.root = str(root)
        self.download = bool(download)
        self.val_size = val_size
        self.split_seed = split_seed
        self.max_train_images = max_train_images
        self.max_test_images = max_test_images

    def prepare_data(self) -> None:
        """Download the archive once (on the first process of each node) when it is missing."""
        if self.download:
            read_cifar10(self.root, train=False, download=True)

    def _load_splits(self) -> dict[str, SplitData]:
        train_images, train_labels, names = read_cifar10(self.root, train=True, download=self.download)
        test_images, test_labels, _ = read_cifar10(self.root, train=False, download=self.download)
        self.class_names = list(names)
        pool = _balanced_cap(
            SplitData(train_images, train_labels, {(32, 32)}), self.max_train_images, self.split_seed
        )
        if self.val_size >= len(pool):
            raise UserError(
                f"data.val_size={self.val_size} leaves no training images out of {len(pool)}; lower it"
            )
        kept, taken = stratified_split(pool.labels, self.val_size / len(pool), self.split_seed)
        test = _balanced_cap(
            SplitData(test_images, test_labels, {(32, 32)}), self.max_test_images, self.split_seed
        )
        for split in (pool, test):
            if len(split) and int(np.max(split.labels)) >= len(names):
                raise UserError(
                    f"CIFAR-10 labels go up to {int(np.max(split.labels))} but there are {len(names)} class names"
                )
        return {"train": subset(pool, kept), "val": subset(pool, taken), "test": test}
