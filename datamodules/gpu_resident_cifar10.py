"""``GPUResidentCIFAR10ClassificationDataModule``: CIFAR-10 classification with every image on the training
device as uint8 and each batch (crop, flip, normalisation) made there with a few batched tensor operations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from datamodules.cifar10_classification import CIFAR10ClassificationDataModule
from datamodules.classification_transforms import rgb_to_luma_uint8
from datamodules.device_batches import DeviceBatches, EvalBatches, PassCounter, batch_seed
from imagelab.core.devices import resolve_device
from imagelab.core.distributed import attached_trainer, check_split_covers_world, rank_and_world
from imagelab.core.errors import UserError


def _split_on_device(images: np.ndarray, channels: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, channels, H, W) on ``device``; gray by the loader's rounded luma."""
    x = np.asarray(images)
    x = rgb_to_luma_uint8(x)[:, None] if channels == 1 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


class GPUResidentCIFAR10ClassificationDataModule(CIFAR10ClassificationDataModule):
    """CIFAR-10 classification with every image on the device as uint8 and batches made there.

    Same splits, class names, normalisation and mixup as ``CIFAR10ClassificationDataModule`` (it subclasses
    it). Training: a new permutation per epoch (DDP: process r takes every W-th image of it, the last
    ``len % W`` images of the permutation are left out that epoch), then the ``crop_flip`` recipe on the whole
    batch at once (random crop of the reflect-padded image, padding 1/8 of the side, and a horizontal flip
    with probability 1/2) and normalisation. Evaluation: the stored images normalised, every image scored
    once (process r: images r, r + W, ...). Supports ``image_size=native`` and ``augment`` none or
    crop_flip (RandAugment and resizing need the loader path). ``device: auto`` = the Trainer's device.
    """

    def __init__(self, *args: Any, device: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.augment not in ("none", "crop_flip"):
            raise UserError(
                f"GPU-resident CIFAR-10 supports data.augment=none or crop_flip, got {self.augment!r}; "
                "use data=cifar10 (the loader path) for strong augmentation"
            )
        if not isinstance(device, str):
            raise UserError(f"data.device must be auto, cpu, cuda or cuda:N, got {device!r}")
        self.device_option = device
        with torch.random.fork_rng(devices=[]):  # see DenoisingDataModule.data_seed
            self.data_seed = int(torch.randint(0, 2**62, ()).item())
        self._device_splits: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._perm: tuple[int, torch.Tensor] | None = None
        self._passes = PassCounter()

    def _device(self) -> torch.device:
        return resolve_device(self.device_option, "data.device", attached_trainer(self))

    def _on_device(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, int64 labels) of ``split`` on ``device``; training images come reflect-padded."""
        key = (split, str(device))
        if key not in self._device_splits:
            if not self.splits:
                self.setup()
            data = self.splits[split]
            if not isinstance(data.images, np.ndarray):
                raise UserError("GPU-resident data needs images in memory (CIFAR-10), not files")
            size = self.target_size()
            if self.native_size() != size:
                raise UserError(
                    f"GPU-resident CIFAR-10 needs data.image_size=native (32), got {self.image_size!r}"
                )
            images = _split_on_device(data.images, self.channels, device)
            if split == "train" and self.augment == "crop_flip":
                pad = max(1, min(size) // 8)
                images = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(
                    torch.uint8
                )
            labels = torch.as_tensor(np.asarray(data.labels), dtype=torch.int64, device=device)
            self._device_splits[key] = (images.contiguous(), labels)
        return self._device_splits[key]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preprocess_config()
        mean = torch.tensor(pre["mean"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(pre["std"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def make_train_batch(
        self, epoch: int, step: int, rank: int, world: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of ``epoch`` for process ``rank`` of ``world``: augmented, normalised, on the device."""
        device = self._device()
        images, labels = self._on_device("train", device)
        n = len(labels)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator(device=device).manual_seed(batch_seed(self.data_seed, epoch, 0, 0))
            self._perm = (epoch, torch.randperm(n, generator=g, device=device))
        mine = self._perm[1][rank : (n // world) * world : world]
        index = mine[step * self.batch_size : (step + 1) * self.batch_size]
        count = len(index)
        g = torch.Generator(device=device).manual_seed(batch_seed(self.data_seed, epoch, rank + 1, step))
        height, width = self.target_size()
        channels, padded_h, padded_w = images.shape[1:]
        if self.augment == "crop_flip":
            top = torch.randint(padded_h - height + 1, (count,), generator=g, device=device)
            left = torch.randint(padded_w - width + 1, (count,), generator=g, device=device)
            flip = torch.rand(count, generator=g, device=device) < 0.5 if self.hflip else None
        else:
            top = left = torch.zeros(count, dtype=torch.int64, device=device)
            flip = None
        i = torch.arange(height, device=device).view(1, 1, height, 1)
        j = torch.arange(width, device=device).view(1, 1, 1, width)
        cols = j if flip is None else torch.where(flip.view(count, 1, 1, 1), width - 1 - j, j)
        c = torch.arange(channels, device=device).view(1, channels, 1, 1)
        flat = (
            ((index.view(count, 1, 1, 1) * channels + c) * padded_h + top.view(count, 1, 1, 1) + i) * padded_w
            + left.view(count, 1, 1, 1)
            + cols
        )
        return self._normalise(torch.take(images, flat)), labels[index]

    def train_dataloader(self) -> DeviceBatches:  # type: ignore[override]
        """Shuffled, augmented training batches made on the device (last partial batch dropped with mixup)."""
        rank, world = rank_and_world(attached_trainer(self))
        _, labels = self._on_device("train", self._device())
        per_rank = len(labels) // world
        steps = (
            per_rank // self.batch_size if self._mixup is not None else math.ceil(per_rank / self.batch_size)
        )
        if steps < 1:
            raise UserError(
                f"{per_rank} training images per process are fewer than data.batch_size={self.batch_size}"
            )
        return DeviceBatches(
            lambda epoch, step: self.make_train_batch(epoch, step, rank, world), steps, self._passes
        )

    def _eval(self, split: str) -> EvalBatches:
        rank, world = rank_and_world(attached_trainer(self))
        images, labels = self._on_device(split, self._device())
        check_split_covers_world(len(labels), world, split)
        mine = torch.arange(rank, len(labels), world, device=images.device)
        chunks = list(torch.split(mine, self.eval_batch_size))
        return EvalBatches(chunks, lambda idx: (self._normalise(images[idx]), labels[idx]))

    def val_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """Validation batches (normalised, on the device) in a fixed order."""
        return self._eval("val")

    def test_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """Test batches (normalised, on the device) in a fixed order."""
        return self._eval("test")
