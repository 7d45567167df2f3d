"""GPU-resident denoising data: the whole data set lives on the training device, batches are made there.

``GPUResidentDenoisingDataModule`` takes the same options, splits, noise and validation/test images as
``datamodules.denoising.DenoisingDataModule`` (it subclasses it), but instead of a DataLoader with per-sample
Python it keeps every training image as uint8 (uint16 sources as int32) in one flat tensor on the device and
makes each batch with a handful of batched tensor operations (the approach of the CIFAR-10 speed-run
records, e.g. airbench):

* random image per patch (uniform), random ``patch_size`` window (uniform), one of the 8 flip/rot90
  orientations (uniform): all folded into one gather from the flat pixel buffer;
* channel conversion (colour -> gray by luminance with scikit-image's weights, or gray -> RGB) and the
  noise model applied to the whole batch with a generator on the device.

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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from datamodules.cifar10_classification import CIFAR10ClassificationDataModule
from datamodules.clean_sources import ImageItem
from datamodules.denoising import DenoisingDataModule, EvalImages
from datamodules.noise import GaussianNoise, NoiseModel
from experiment_utils.distributed import attached_trainer, rank_and_world
from experiment_utils.errors import UserError

log = logging.getLogger(__name__)

RGB_TO_GRAY = (0.2125, 0.7154, 0.0721)
"""Luminance weights of ``skimage.color.rgb2gray`` (what the loader path uses for channels=1)."""

Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_device(device: str, trainer: Any | None) -> torch.device:
    """``auto`` -> the trainer's device, else CUDA when available, else CPU; other values as given."""
    if device != "auto":
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UserError(f"data.device must be auto, cpu, cuda or cuda:N, got {device!r}") from exc
    if trainer is not None:
        return trainer.strategy.root_device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PassCounter:
    """Numbers the passes over a data module's training data whose epoch nobody set (plain iteration)."""

    def __init__(self) -> None:
        self.passes = 0

    def __call__(self) -> int:
        self.passes += 1
        return self.passes - 1


class DeviceBatches:
    """An iterable of ``length`` batches made on the device by ``make_batch(epoch, step)``.

    Each iteration is one epoch: the one Lightning sets through ``sampler.set_epoch`` (this object is its own
    ``sampler`` for that purpose), or, when nobody sets it, the next number of ``next_pass`` (shared by all
    loaders of a data module, so every plain iteration gets fresh batches).
    """

    def __init__(
        self, make_batch: Callable[[int, int], Batch], length: int, next_pass: Callable[[], int] | None = None
    ) -> None:
        self.make_batch = make_batch
        self.length = length
        self.epoch = 0
        self._epoch_set = False
        self._next_pass = next_pass or PassCounter()

    @property
    def sampler(self) -> DeviceBatches:
        """Itself: Lightning calls ``dataloader.sampler.set_epoch(epoch)`` on every training iterable."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw the batches of ``epoch``."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch if self._epoch_set else self._next_pass()
        for step in range(self.length):
            yield self.make_batch(epoch, step)


class EvalBatches:
    """Fixed val/test batches on the device (one process's share under DDP), each made by ``make(item)``."""

    def __init__(self, items: list[Any], make: Callable[[Any], Batch] | None = None) -> None:
        self.items = items
        self.make = make

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Batch]:
        for item in self.items:
            yield item if self.make is None else self.make(item)


class DeviceImageStore:
    """Images of different sizes in one flat pixel tensor on ``device``, cut into patches in batches.

    Pixels keep their stored integer values (uint8, or int32 for 16-bit sources, scaled to 16 bits) in
    H x W x C order; ``channels_stored`` is 3 when any image is colour (gray images are then repeated), else 1.
    Windows are drawn from the first ``sampled`` images (default all); the others can be read with the same
    windows shifted by an image offset (the real noisy partners of paired data).
    """

    def __init__(self, arrays: list[np.ndarray], device: torch.device, sampled: int | None = None) -> None:
        if not arrays:
            raise UserError("no training images to put on the device")
        self.sampled = len(arrays) if sampled is None else sampled
        deep = any(a.dtype == np.uint16 for a in arrays)
        bad = sorted({str(a.dtype) for a in arrays if a.dtype not in (np.uint8, np.uint16)})
        if bad:
            raise UserError(
                f"GPU-resident data needs 8- or 16-bit images, got {', '.join(bad)}; use the loader"
            )
        self.channels_stored = 3 if any(a.ndim == 3 for a in arrays) else 1
        self.scale = 65535.0 if deep else 255.0
        flat, offsets, heights, widths = [], [], [], []
        position = 0
        for array in arrays:
            a = array.astype(np.int32) * 257 if deep and array.dtype == np.uint8 else array
            if a.ndim == 2:
                a = a[:, :, None]
            if a.shape[2] != self.channels_stored:
                a = np.repeat(a, self.channels_stored, axis=2)
            offsets.append(position)
            heights.append(a.shape[0])
            widths.append(a.shape[1])
            flat.append(np.ascontiguousarray(a).reshape(-1))
            position += a.size
        buffer = np.concatenate(flat).astype(np.int32 if deep else np.uint8, copy=False)
        self.device = device
        self.pixels = torch.from_numpy(buffer).to(device)
        self.offsets = torch.tensor(offsets, dtype=torch.int64, device=device)
        self.heights = torch.tensor(heights, dtype=torch.int64, device=device)
        self.widths = torch.tensor(widths, dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data on the device."""
        return self.pixels.numel() * self.pixels.element_size()

    def random_windows(self, count: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw ``count`` (image, top, left, orientation) uniformly, as the loader path does per sample."""
        dev = self.device
        image = torch.randint(self.sampled, (count,), generator=generator, device=dev)
        u = torch.rand((2, count), generator=generator, device=dev, dtype=torch.float64)
        top = (u[0] * (self.heights[image] - size + 1)).floor().long()
        left = (u[1] * (self.widths[image] - size + 1)).floor().long()
        orientation = torch.randint(8, (count,), generator=generator, device=dev)
        return {"image": image, "top": top, "left": left, "orientation": orientation}

    def gather(self, windows: dict[str, torch.Tensor], size: int, image_offset: int = 0) -> torch.Tensor:
        """(count, channels_stored, size, size) integer patches of ``windows`` of images ``image + offset``.

        Orientation bits: 1 = transpose, 2 = flip rows, 4 = flip columns: the 8 elements of the square's
        symmetry group, the same set as the loader's flip x rot90.
        """
        dev = self.device
        image, orientation = windows["image"] + image_offset, windows["orientation"]
        count, c = len(image), self.channels_stored
        i = torch.arange(size, device=dev).view(1, size, 1)
        j = torch.arange(size, device=dev).view(1, 1, size)
        transpose = (orientation & 1).bool().view(count, 1, 1)
        flip_rows = (orientation & 2).bool().view(count, 1, 1)
        flip_cols = (orientation & 4).bool().view(count, 1, 1)
        rows = torch.where(transpose, j, i)
        cols = torch.where(transpose, i, j)
        rows = torch.where(flip_rows, size - 1 - rows, rows) + windows["top"].view(count, 1, 1)
        cols = torch.where(flip_cols, size - 1 - cols, cols) + windows["left"].view(count, 1, 1)
        base = (
            self.offsets[image].view(count, 1, 1) + (rows * self.widths[image].view(count, 1, 1) + cols) * c
        )
        index = base.unsqueeze(1) + torch.arange(c, device=dev).view(1, c, 1, 1)
        return torch.take(self.pixels, index)

    def to_float(self, patches: torch.Tensor, channels: int) -> torch.Tensor:
        """Integer patches -> float32 in [0, 1] with ``channels`` channels (luminance or repetition)."""
        x = patches.float() / self.scale
        if channels == 1 and x.shape[1] == 3:
            weights = torch.tensor(RGB_TO_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()


def batch_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    """Seed of the device generator of training batch ``step`` of ``epoch`` on process ``rank``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank), int(step)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def noise_batch(noise: NoiseModel, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply ``noise`` to a (B, C, H, W) batch with one draw per image where the model draws per image."""
    if isinstance(noise, GaussianNoise) and noise.sigma_range is not None:
        lo, hi = noise.sigma_range
        sigma = lo + (hi - lo) * torch.rand(
            (clean.shape[0], 1, 1, 1), generator=generator, device=clean.device, dtype=clean.dtype
        )
        noisy = clean + (sigma / 255.0) * torch.randn(
            clean.shape, generator=generator, device=clean.device, dtype=clean.dtype
        )
        return noisy.clamp(0.0, 1.0) if noise.clip else noisy
    # the other models draw element-wise (fixed Gaussian sigma, Poisson-Gaussian, salt-and-pepper)
    return noise(clean, generator)


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
        return resolve_device(self.device_option, attached_trainer(self))

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
        return noise_batch(self.noise, clean, generator).contiguous(), clean

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
        if not self.datasets:
            self.setup()
        dataset: EvalImages = self.datasets[split]  # type: ignore[assignment]
        if len(dataset) == 0:
            raise UserError(
                f"no {split} images for source={self.source}; set data.test_fraction > 0 or list test images"
            )
        trainer = attached_trainer(self)
        rank, world = rank_and_world(trainer)
        device = self._device()
        key = (split, rank, world, str(device))
        if key not in self._eval_cache:
            if len(dataset) < world:
                raise UserError(
                    f"the {split} split has {len(dataset)} item(s) but the run has {world} processes; every "
                    f"process needs at least one: add {split} images or use fewer devices (trainer.devices)"
                )
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


# --------------------------------------------------------------------------------------------- CIFAR-10 classes


def _split_on_device(images: np.ndarray, channels: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, channels, H, W) on ``device``; gray by the loader's rounded luma."""
    from datamodules.classification_transforms import _LUMA

    x = np.asarray(images)
    if channels == 1:
        x = (
            (x[..., :3].astype(np.float32) @ np.asarray(_LUMA, np.float32) + 0.5)
            .clip(0, 255)
            .astype(np.uint8)
        )
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
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
        return resolve_device(self.device_option, attached_trainer(self))

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
        if len(labels) < world:
            raise UserError(
                f"the {split} split has {len(labels)} item(s) but the run has {world} processes; every "
                f"process needs at least one: add {split} images or use fewer devices (trainer.devices)"
            )
        mine = torch.arange(rank, len(labels), world, device=images.device)
        chunks = list(torch.split(mine, self.eval_batch_size))
        return EvalBatches(chunks, lambda idx: (self._normalise(images[idx]), labels[idx]))

    def val_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """Validation batches (normalised, on the device) in a fixed order."""
        return self._eval("val")

    def test_dataloader(self) -> EvalBatches:  # type: ignore[override]
        """Test batches (normalised, on the device) in a fixed order."""
        return self._eval("test")
