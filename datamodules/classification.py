"""Base of the classification datamodules: splits, class names, transforms sized by the backbone, mixup.

Subclasses (``cifar10_classification``, ``image_folder``, ``digits``) only load their splits: for each of
train/val/test either an in-memory uint8 array (N, H, W, C) or a list of image files, plus int labels.
Batches are ``(images, labels)``: normalised float32 (B, C, H, W) images and int64 labels, or during training
with ``mixup`` soft (B, K) targets (timm's ``Mixup``, applied on the device after the batch transfer).

Data flows one way, from the data to the model: ``data_config()`` reports the classes and the preprocessing
(image size, channels, mean, std, interpolation, crop_pct) as a plain dict, which ``ClassifierModule.setup``
reads (and saves with its checkpoints); the datamodule never sees the model. Where the preprocessing follows
the backbone (``image_size: backbone``; ``mean``/``std`` null), the datamodule looks up timm's pretrained
config of the backbone *name* it is given (``backbone``, interpolated from ``model.backbone`` by the data
configs) with ``timm.models.get_pretrained_cfg`` + ``timm.data.resolve_data_config``: the same values
timm's ``resolve_model_data_config`` gives for the built model, without needing the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from timm.data import Mixup, resolve_data_config
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg
from torch.utils.data import DataLoader, Dataset

from datamodules.classification_transforms import (
    AUGMENT_PRESETS,
    STRONG_POLICIES,
    build_transform,
    channel_stats,
    check_image_size,
    to_uint8_chw,
)
from datamodules.image_io import read_image
from datamodules.loaders import build_loader, check_int, check_pin_memory
from imagelab.core.distributed import attached_trainer, eval_sampler
from imagelab.core.errors import UserError
from imagelab.core.plain_config import to_plain

log = logging.getLogger(__name__)
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class SplitData:
    """One split: ``images`` (uint8 array N x H x W x C, or a list of files) and their int ``labels``."""

    images: np.ndarray | list[Path]
    labels: np.ndarray
    sizes: set[tuple[int, int]] = field(default_factory=set)  # (H, W) of the images, when known

    def __len__(self) -> int:
        return len(self.labels)


class ClassificationImages(Dataset):
    """``(transform(image), label)`` pairs of one split; files are read on access with ``image_io``."""

    def __init__(
        self, split: SplitData, channels: int, transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.split = split
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images = self.split.images
        array = images[index] if isinstance(images, np.ndarray) else read_image(images[index])
        return self.transform(to_uint8_chw(array, self.channels)), int(self.split.labels[index])


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken) with about ``fraction`` of every class taken, chosen with a fixed seed.

    Each class with 2+ images keeps at least one and, when ``fraction > 0``, gives at least one.
    """
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_take = round(fraction * len(idx))
        if fraction > 0 and len(idx) >= 2:
            n_take = min(max(n_take, 1), len(idx) - 1)
        taken.append(idx[:n_take])
        kept.append(idx[n_take:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def subset(split: SplitData, indices: np.ndarray) -> SplitData:
    """The images of ``split`` at ``indices`` (sorted)."""
    images = (
        split.images[indices] if isinstance(split.images, np.ndarray) else [split.images[i] for i in indices]
    )
    return SplitData(images, split.labels[indices], set(split.sizes))


class ClassificationDataModule(pl.LightningDataModule):
    """Shared machinery of the classification datamodules (see the module docstring); subclasses implement
    ``_load_splits() -> {"train": SplitData, "val": ..., "test": ...}`` and set ``class_names``."""

    def __init__(
        self,
        image_size: str | int = "native",
        augment: str = "crop_flip",
        strong_policy: str = "randaugment",
        random_erasing: float = 0.25,
        hflip: bool = True,
        mixup: dict | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_pct: float = 1.0,
        channels: int = 3,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool | str = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        backbone: str | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        mixup, mean, std = (to_plain(v) for v in (mixup, mean, std))
        self.image_size = check_image_size(image_size)
        if augment not in AUGMENT_PRESETS:
            raise UserError(f"data.augment={augment!r} is not a preset: use {' | '.join(AUGMENT_PRESETS)}")
        if strong_policy not in STRONG_POLICIES:
            raise UserError(f"data.strong_policy={strong_policy!r}: use {' | '.join(STRONG_POLICIES)}")
        if not 0.0 <= float(random_erasing) <= 1.0:
            raise UserError(f"data.random_erasing is a probability in [0, 1], got {random_erasing}")
        if not 0.0 < float(crop_pct) <= 1.0:
            raise UserError(f"data.crop_pct must be in (0, 1], got {crop_pct}")
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 (gray) or 3 (RGB), got {channels!r}")
        if (mean is None) != (std is None):
            raise UserError("set both data.mean and data.std (or neither: the backbone's values are used)")
        for key, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            check_int(key, value, low)
        check_int("prefetch_factor", prefetch_factor, 1, allow_none=True)
        if mixup:
            self._check_mixup(dict(mixup), batch_size)
        self.augment = augment
        self.strong_policy = strong_policy
        self.random_erasing = float(random_erasing)
        self.hflip = bool(hflip)
        self.mixup_cfg: dict | None = dict(mixup) if mixup else None
        self.mean, self.std = mean, std
        self.crop_pct = float(crop_pct)
        self.channels = int(channels)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = check_pin_memory(pin_memory)  # auto = pinned when training on CUDA
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
        self.prefetch_factor = prefetch_factor  # batches loaded ahead by each worker (num_workers > 0)
        self.drop_last = bool(drop_last)  # skip each epoch's last partial training batch (always with mixup)
        self.class_names: list[str] = []
        self.splits: dict[str, SplitData] = {}
        self.backbone = None if backbone is None else str(backbone)
        self._backbone_cfg: dict[str, Any] | None = None
        self._mixup: Any = None

    # -------------------------------------------------------------------------------------------- config
    @staticmethod
    def _check_mixup(cfg: dict, batch_size: int) -> None:
        try:
            Mixup(**{**cfg, "num_classes": 2, "label_smoothing": 0.0})
        except (TypeError, ValueError, AssertionError) as exc:
            raise UserError(
                f"data.mixup has a bad option ({exc}); see timm.data.Mixup for its keys"
            ) from None
        if batch_size % 2:
            raise UserError(f"data.mixup needs an even data.batch_size, got {batch_size}")

    def backbone_data_config(self, required: bool = True) -> dict[str, Any]:
        """timm's data config of ``backbone`` (input_size, mean, std, interpolation, crop_pct).

        {} without a backbone; a name timm has no pretrained config for is a UserError when ``required``
        (the preprocessing depends on it), else {}."""
        if self._backbone_cfg is None and self.backbone:
            name = self.backbone
            pretrained = None if name.startswith(("hf-hub:", "local-dir:")) else get_pretrained_cfg(name)
            if pretrained is not None:
                self._backbone_cfg = dict(resolve_data_config(pretrained_cfg=pretrained.to_dict()))
            elif required:
                raise UserError(
                    f"data.backbone={name!r}: timm has no data config for it (an unknown or hub model name); "
                    "set data.image_size to a number and data.mean/data.std explicitly"
                )
        return self._backbone_cfg or {}

    @property
    def num_classes(self) -> int:
        """Number of classes (after ``setup``)."""
        return len(self.class_names)

    def native_size(self) -> tuple[int, int] | None:
        """(H, W) shared by every image, or None when sizes differ or are unknown."""
        sizes = set().union(*(s.sizes for s in self.splits.values())) if self.splits else set()
        return next(iter(sizes)) if len(sizes) == 1 else None

    def target_size(self) -> tuple[int, int]:
        """(H, W) of the images given to the model."""
        if self.image_size == "native":
            native = self.native_size()
            if native is None:
                raise UserError(
                    "data.image_size=native needs images of one size, but they differ (or are unknown with "
                    "data.check_files=false): set data.image_size=backbone or a number"
                )
            return native
        if self.image_size == "backbone":
            if not self.backbone:
                raise UserError(
                    "data.image_size=backbone needs data.backbone (a timm model name; the classification data "
                    "configs take it from model.backbone): set it, or set data.image_size to a number"
                )
            height, width = self.backbone_data_config()["input_size"][-2:]
            return int(height), int(width)
        return int(self.image_size), int(self.image_size)

    def preprocess_config(self) -> dict[str, Any]:
        """What a new image goes through before the model (saved with the checkpoint for scripts/predict.py)."""
        model_cfg = self.backbone_data_config(required=self.mean is None or self.image_size == "backbone")
        if self.mean is not None:
            mean, std = self.mean, self.std
        else:
            mean = model_cfg.get("mean", IMAGENET_DEFAULT_MEAN)
            std = model_cfg.get("std", IMAGENET_DEFAULT_STD)
        return {
            "image_size": list(self.target_size()),
            "mean": channel_stats(mean, self.channels, "mean"),
            "std": channel_stats(std, self.channels, "std"),
            "channels": self.channels,
            "interpolation": str(model_cfg.get("interpolation", "bilinear")),
            "crop_pct": self.crop_pct,
        }

    def transform(self, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """The train or eval transform for uint8 (C, H, W) tensors."""
        pre = self.preprocess_config()
        return build_transform(
            train,
            size=tuple(pre["image_size"]),
            native=self.native_size(),
            augment=self.augment,
            strong_policy=self.strong_policy,
            random_erasing=self.random_erasing,
            hflip=self.hflip,
            mean=pre["mean"],
            std=pre["std"],
            interpolation=pre["interpolation"],
            crop_pct=pre["crop_pct"],
        )

    # ---------------------------------------------------------------------------------------------- data
    def _load_splits(self) -> dict[str, SplitData]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once and check them."""
        if not self.splits:
            self._load_and_check()

    def data_config(self) -> dict[str, Any]:
        """What a model trained on this data needs to know (after ``setup``), as plain data:
        ``class_names`` and ``preprocess`` (``preprocess_config``: image_size, channels, mean, std,
        interpolation, crop_pct). ``ClassifierModule.setup`` reads it; nothing flows back."""
        if not self.splits:
            self._load_and_check()
        return {"class_names": list(self.class_names), "preprocess": self.preprocess_config()}

    def _load_and_check(self) -> None:
        splits = self._load_splits()
        for split in SPLITS:
            if split not in splits or len(splits[split]) == 0:
                raise UserError(f"the {split} split has no images; check data.root and the split settings")
        if len(self.class_names) < 2:
            where = f" in {getattr(self, 'root', 'the data')}"
            raise UserError(
                f"need at least 2 classes, found {len(self.class_names)}{where}: give one sub-folder per class"
            )
        self.splits = splits
        if self.mixup_cfg:
            self._mixup = Mixup(**{**self.mixup_cfg, "num_classes": self.num_classes, "label_smoothing": 0.0})
        log.info(
            "classification data: %d classes, %s train / %s val / %s test images",
            self.num_classes,
            *(len(splits[s]) for s in SPLITS),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self.splits:
            self._load_and_check()
        dataset = ClassificationImages(self.splits[split], self.channels, self.transform(train))
        batch_size = self.batch_size if train else self.eval_batch_size
        # Under DDP val/test images are split without padding, so each is scored exactly once.
        sampler = None if train else eval_sampler(dataset, attached_trainer(self), split)
        return build_loader(
            dataset,
            batch_size,
            trainer=attached_trainer(self),
            shuffle=train,
            sampler=sampler,
            drop_last=train and (self.drop_last or self._mixup is not None) and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order (eval transform)."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order (eval transform)."""
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Mix training batches with timm's mixup/cutmix (soft targets) when ``mixup`` is configured."""
        trainer = self.trainer
        if self._mixup is not None and trainer is not None and trainer.training:
            images, labels = batch
            if len(images) % 2 == 0 and labels.ndim == 1:
                return self._mixup(images, labels)
        return batch
