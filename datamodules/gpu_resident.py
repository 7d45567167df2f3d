"""GPU-resident denoising data: the whole data set lives on the training device, batches are made there.

``GPUResidentDenoisingDataModule`` takes the same options, splits, noise and validation/test images as
``datamodules.denoising.DenoisingDataModule`` (it subclasses it), but instead of a DataLoader with per-sample
Python it keeps every training image as uint8 (uint16 sources as int32) in one flat tensor on the device and
makes each batch with a handful of batched tensor operations (the approach of the CIFAR-10 speed-run
records, e.g. airbench):

* random image per patch (uniform), random ``patch_size`` window (uniform), one of the 8 flip/rot90
  orientations (uniform): all folded into one gather from the flat pixel buffer;
* channel conversion (colour -> gray by luminance with scikit-image's weights, or gray -> RGB) and the
  noise model applied to the whole batch with a generator on the device (``NoiseModel.batch``).

The batch distribution is the loader path's (tests/test_gpu_resident.py compares their statistics); the
random streams differ. Val/test images are made once by the loader path's ``EvalImages`` (same crops, same
seeded noise, bit-identical values) and kept on the device as float32. Under DDP process r draws its own
training patches (generator seeded by the data seed, epoch and r; ``patches_per_epoch`` counts all processes
together) and scores val/test images r, r + W, ... exactly once, like the loader path.

``device: auto`` is the Trainer's device (the first GPU of this process under DDP), or CUDA when available
outside a Trainer, else CPU. ``num_workers``, ``pin_memory``, ``persistent_workers`` and ``prefetch_factor`` are
accepted (so the configs can inherit the loader configs) and unused. Use it for data sets that fit in GPU
memory: CIFAR-10 is 150 MB as uint8, the bundled photos about 20 MB.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from datamodules.clean_sources import ImageItem
from datamodules.denoising import DenoisingDataModule
from datamodules.denoising_datasets import EvalImages
from datamodules.device_batches import (
    Batch,
    DeviceBatches,
    EvalBatches,
    PassCounter,
    batch_seed,
)
from datamodules.device_store import DeviceImageStore
from imagelab.core.devices import resolve_device
from imagelab.core.distributed import attached_trainer, check_split_covers_world, rank_and_world
from imagelab.core.errors import UserError

log = logging.getLogger(__name__)


class GPUResidentDenoisingDataModule(DenoisingDataModule):
    """``DenoisingDataModule`` whose images live on the device and whose batches are made there.

    All ``DenoisingDataModule`` arguments, plus ``device`` (``auto`` = the Trainer's device). See the module
    docstring for what is the same as the loader path and what differs.
    """

    def __init__(self, *args: Any, device: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(device, str):
            raise UserError(f"data.device must be auto, cpu, cuda or cuda:N, got {device!r}")
        self.device_option = device
        self.store: DeviceImageStore | None = None
        self.paired = False
        self._passes = PassCounter()
        self._eval_cache: dict[tuple[str, int, int, str], EvalBatches] = {}

    def _device(self) -> torch.device:
        return resolve_device(self.device_option, "data.device", attached_trainer(self))

    def _ensure_store(self, device: torch.device) -> DeviceImageStore:
        """Put the training images on ``device`` (once per device)."""
        if not self.datasets:
            self.setup()
        if self.store is None or self.store.device != device:
            items: list[ImageItem] = self.datasets["train"].items  # type: ignore[attr-defined]
            arrays = [it.clean for it in items]
            self.paired = items[0].noisy is not None
            if self.paired:
                arrays += [it.noisy for it in items]  # type: ignore[misc]
            self.store = DeviceImageStore(arrays, device, sampled=len(items))
            log.info(
                "GPU-resident data: %d training images, %.1f MB on %s",
                len(items),
                self.store.nbytes / 2**20,
                device,
            )
        return self.store

    def make_train_batch(self, epoch: int, step: int, count: int, rank: int = 0) -> Batch:
        """Batch ``step`` of ``epoch`` for process ``rank``: ``count`` (noisy, clean) patches on the device."""
        store = self.store
        assert store is not None, "call train_dataloader() first"
        generator = torch.Generator(device=store.device)
        generator.manual_seed(batch_seed(self.data_seed, epoch, rank, step))
        windows = store.random_windows(count, self.patch_size, generator)
        clean = store.to_float(store.gather(windows, self.patch_size), self.channels)
        if self.paired:
            noisy = store.to_float(store.gather(windows, self.patch_size, store.sampled), self.channels)
            return noisy, clean
        assert self.noise is not None
        return self.noise.batch(clean, generator).contiguous(), clean

    def train_dataloader(self) -> DeviceBatches:  # type: ignore[override]
        """``patches_per_epoch`` random patches per epoch (all processes together), made on the device."""
        self._ensure_store(self._device())
        rank, world = rank_and_world(attached_trainer(self))
        per_rank = math.ceil(self.patches_per_epoch / world)
        steps = math.ceil(per_rank / self.batch_size)
        last = per_rank - (steps - 1) * self.batch_size

        def make(epoch: int, step: int) -> Batch:
            return self.make_train_batch(epoch, step, self.batch_size if step < steps - 1 else last, rank)

        return DeviceBatches(make, steps, self._passes)

    def _eval_batches(self, split: str) -> EvalBatches:
        dataset: EvalImages = self.split_dataset(split)  # type: ignore[assignment]
        trainer = attached_trainer(self)
        rank, world = rank_and_world(trainer)
        device = self._device()
        key = (split, rank, world, str(device))
        if key not in self._eval_cache:
            check_split_covers_world(len(dataset), world, split)
            mine = list(range(rank, len(dataset), world))
            batches = []
            for start in range(0, len(mine), self.eval_batch_size):
                pairs = [dataset[i] for i in mine[start : start + self.eval_batch_size]]
                noisy = torch.stack([p[0] for p in pairs]).to(device)
                clean = torch.stack([p[1] for p in pairs]).to(device)
                batches.append((noisy, clean))
            self._eval_cache[key] = EvalBatches(batches)
        return self._eval_cache[key]

    def val_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """The validation images with fixed noise, on the device, in a fixed order."""
        return self._eval_batches("val")

    def test_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """The test images with fixed noise, on the device, in a fixed order."""
        return self._eval_batches("test")
