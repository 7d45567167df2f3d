"""``DenoisingDataModule``: (noisy, clean) float32 batches for training and evaluating image denoisers.

Train: ``patches_per_epoch`` random patches per epoch: a random training image, a random ``patch_size`` crop,
a random flip/rot90 (8 orientations) and fresh noise. Patch ``i`` of epoch ``e`` is drawn from a generator
seeded by (data seed, e, i); the data seed is taken from torch's RNG when the data module is built (so
``seed_everything`` makes runs repeatable). The patches of an epoch are thus the same whatever the number of
DataLoader workers or DDP processes: under DDP, ``PatchSampler`` gives process r the patches r, r + W,
r + 2W, ... of the epoch, so W processes with batch B see exactly the patches of one process with batch W x B
(``patches_per_epoch`` counts all processes together; it is rounded up to a multiple of W by repeating at
most W - 1 patches).

Val/test: every image of the split, centre-cropped to ``eval_crop``, with noise drawn by a generator seeded
from (noise_seed, split, image index): batches are bit-identical across epochs, runs and DataLoader settings.
Under DDP every val/test image is scored exactly once (``experiment_utils.distributed.eval_sampler``):
process r gets images r, r + W, ...; processes may run one batch more or less than each other, and the last
batch of a process may be partial (nothing is padded or dropped).
If ``eval_crop`` is larger than the smallest image of a split the crop is reduced to that image's smaller
side for the whole split (so batches still collate); with ``eval_crop=None`` images are used whole, which
needs equal sizes or ``eval_batch_size=1``.

Channels: with ``channels=1`` colour images become gray by luminance (``skimage.color.rgb2gray``), with
``channels=3`` gray images are repeated to RGB. For ``source=paired`` the real noisy image is used (the same
crop and orientation as the clean one) and ``noise`` is ignored. See ``datamodules.clean_sources`` for the
sources and their splits, ``datamodules.noise`` for the noise models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.clean_sources import (
    SPLITS,
    ImageItem,
    Splits,
    check_fractions,
    cifar10_source,
    folder_source,
    paired_source,
    skimage_source,
)
from datamodules.image_io import to_float
from datamodules.noise import NoiseModel, build_noise
from experiment_utils.distributed import attached_trainer, eval_sampler, rank_and_world
from experiment_utils.errors import UserError
from experiment_utils.plain_config import to_plain

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("skimage", "folder", "cifar10", "paired")
"""The values accepted for ``source``."""
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def to_tensor(array: np.ndarray, channels: int) -> torch.Tensor:
    """Pixels as stored ((H, W) or (H, W, 3), uint8/uint16) -> float32 (channels, H, W) in [0, 1]."""
    x = to_float(array)
    if x.ndim == 3 and channels == 1:
        from skimage.color import rgb2gray

        x = rgb2gray(x)
    elif x.ndim == 2 and channels == 3:
        x = np.repeat(x[:, :, None], 3, axis=2)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def eval_seed(noise_seed: int, split: str, index: int) -> int:
    """Seed of the noise generator for image ``index`` of ``split`` (stable across machines and versions)."""
    state = np.random.SeedSequence([int(noise_seed), _SPLIT_CODE[split], int(index)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def patch_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the generator of training patch ``index`` of ``epoch`` in a run whose data seed is ``seed``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class TrainPatches(Dataset):
    """``length`` random (noisy, clean) patches per epoch.

    Item ``epoch * length + i`` (the indices ``PatchSampler`` yields) is patch ``i`` of ``epoch``, drawn from
    a generator seeded by ``patch_seed(seed, epoch, i)``: the same patch in any process or worker. ``seed``
    None is drawn from torch's RNG by ``ensure_seed`` (called in the main process when a loader is made).
    """

    def __init__(
        self,
        items: Sequence[ImageItem],
        channels: int,
        patch_size: int,
        length: int,
        noise: NoiseModel | None,
        seed: int | None = None,
    ) -> None:
        self.items = list(items)
        self.channels = channels
        self.patch_size = patch_size
        self.length = length
        self.noise = noise
        self.seed = seed
        self.passes = 0  # epochs drawn by samplers that were not told their epoch (plain iteration)

    def __len__(self) -> int:
        return self.length

    def ensure_seed(self) -> int:
        """The data seed, drawn from torch's RNG on first use (so ``seed_everything`` fixes it)."""
        if self.seed is None:
            self.seed = int(torch.randint(0, 2**62, ()).item())
        return self.seed

    def next_pass(self) -> int:
        """A new epoch number for a pass whose epoch nobody set (each plain iteration gets fresh patches)."""
        self.passes += 1
        return self.passes - 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(int(index), self.length)
        g = torch.Generator().manual_seed(patch_seed(self.ensure_seed(), epoch, i))
        item = self.items[int(torch.randint(len(self.items), (), generator=g))]
        height, width = item.size
        p = self.patch_size
        top = int(torch.randint(height - p + 1, (), generator=g))
        left = int(torch.randint(width - p + 1, (), generator=g))
        turns, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=g))
        flip = flip % 2

        def crop(array: np.ndarray) -> torch.Tensor:
            t = to_tensor(array[top : top + p, left : left + p], self.channels)
            if flip:
                t = torch.flip(t, dims=(2,))
            return torch.rot90(t, turns, dims=(1, 2)).contiguous() if turns else t

        clean = crop(item.clean)
        if item.noisy is not None:
            return crop(item.noisy), clean
        assert self.noise is not None
        return self.noise(clean, g).contiguous(), clean


class EvalImages(Dataset):
    """Fixed (noisy, clean) images of one split: centre crop of ``crop`` (None = whole), seeded noise."""

    def __init__(
        self,
        items: Sequence[ImageItem],
        channels: int,
        crop: int | None,
        noise: NoiseModel | None,
        noise_seed: int,
        split: str,
    ) -> None:
        self.items = list(items)
        self.channels = channels
        self.crop = crop
        self.noise = noise
        self.noise_seed = noise_seed
        self.split = split

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]

        def crop(array: np.ndarray) -> np.ndarray:
            if self.crop is None:
                return array
            height, width = array.shape[:2]
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
            return array[top : top + self.crop, left : left + self.crop]

        clean = to_tensor(crop(item.clean), self.channels)
        if item.noisy is not None:
            return to_tensor(crop(item.noisy), self.channels), clean
        assert self.noise is not None
        g = torch.Generator().manual_seed(eval_seed(self.noise_seed, self.split, index))
        return self.noise(clean, g).contiguous(), clean


class PatchSampler(DistributedSampler):
    """Indices ``epoch * length + i`` of the training patches of one process (all of them on one process).

    Process ``rank`` of ``num_replicas`` gets patches rank, rank + W, ... of the epoch, in order. The epoch is
    the one Lightning sets with ``set_epoch`` (so a resumed run continues the patch sequence); without
    ``set_epoch`` every iteration takes the dataset's next pass number. Being a ``DistributedSampler``,
    Lightning keeps it under DDP instead of putting its own in.
    """

    def __init__(
        self,
        dataset: TrainPatches,
        num_replicas: int = 1,
        rank: int = 0,
        resume_at: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self._epoch_set = False
        # (epoch, indices done): a run resumed in the middle of that epoch continues with the patches it had
        # not trained on yet, so it matches an uninterrupted run exactly
        self.resume_at = resume_at

    def set_epoch(self, epoch: int) -> None:
        """Use patches of ``epoch`` from now on (Lightning calls this at the start of every epoch)."""
        super().set_epoch(epoch)
        self._epoch_set = True

    def __iter__(self):  # type: ignore[override]
        """The indices of this process for the current epoch."""
        dataset: TrainPatches = self.dataset  # type: ignore[assignment]
        epoch = self.epoch if self._epoch_set else dataset.next_pass()
        offset = epoch * len(dataset)
        indices = [offset + i for i in super().__iter__()]
        if self.resume_at is not None and self.resume_at[0] == epoch:
            indices = indices[self.resume_at[1] :]
        self.resume_at = None
        return iter(indices)


def resolve_pin_memory(pin_memory: bool | str, trainer: Any | None) -> bool:
    """``data.pin_memory`` as a bool: ``auto`` = pinned when the trainer's device (or, without a trainer, the
    machine) is a CUDA GPU, where Lightning's non-blocking host-to-device copies then overlap with compute."""
    if pin_memory != "auto":
        return bool(pin_memory)
    if trainer is not None:
        return trainer.strategy.root_device.type == "cuda"
    return torch.cuda.is_available()


def _check_int(key: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        extra = " or null" if allow_none else ""
        raise UserError(f"data.{key} must be an integer >= {low}{extra}, got {value!r}")


class DenoisingDataModule(pl.LightningDataModule):
    """(noisy, clean) batches for denoising: skimage photos, a folder, CIFAR-10 or real noisy/clean pairs.

    See the module docstring for how patches, crops, splits and noise are made; ``channels`` is the number of
    image channels of every tensor (1 gray, 3 RGB). ``image_names`` maps each split to its image names after
    ``setup``.
    """

    def __init__(
        self,
        source: str = "skimage",
        root: str | None = None,
        skimage_images: dict | None = None,
        download: bool = True,
        max_images: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        channels: int = 1,
        noise: dict | None = None,
        eval_noise: dict | None = None,
        patch_size: int = 40,
        patches_per_epoch: int = 4096,
        batch_size: int = 32,
        eval_batch_size: int = 1,
        eval_crop: int | None = 256,
        noise_seed: int = 1234,
        num_workers: int = 0,
        pin_memory: bool | str = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__()
        skimage_images = to_plain(skimage_images)
        noise = to_plain(noise)
        eval_noise = to_plain(eval_noise)
        root = None if root is None else str(root)
        if source not in SOURCES:
            raise UserError(f"unknown data source {source!r}; valid sources: {', '.join(SOURCES)}")
        if source != "skimage" and root is None:
            raise UserError(
                f"source={source} needs data.root (see conf/data/denoise_*.yaml for what it holds)"
            )
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 (gray) or 3 (RGB), got {channels!r}")
        for key, value, low in (
            ("patch_size", patch_size, 1),
            ("patches_per_epoch", patches_per_epoch, 1),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
            ("split_seed", split_seed, 0),
            ("noise_seed", noise_seed, 0),
        ):
            _check_int(key, value, low)
        _check_int("eval_crop", eval_crop, 1, allow_none=True)
        _check_int("max_images", max_images, 1, allow_none=True)
        if source in ("folder", "paired"):
            check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()
        self.source = source
        self.root = root
        self.skimage_images = skimage_images
        self.download = bool(download)
        self.max_images = max_images
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.channels = channels
        self.noise: NoiseModel | None = None if source == "paired" else build_noise(noise)
        # val/test noise: its own model when given (e.g. fixed sigma for a blind model), else the training one
        self.eval_noise: NoiseModel | None = (
            self.noise if source == "paired" or eval_noise is None else build_noise(eval_noise)
        )
        self.patch_size = patch_size
        self.patches_per_epoch = patches_per_epoch
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.eval_crop = eval_crop
        self.noise_seed = noise_seed
        self.num_workers = num_workers
        if pin_memory != "auto" and not isinstance(pin_memory, bool):
            raise UserError(f"data.pin_memory must be true, false or auto, got {pin_memory!r}")
        self.pin_memory: bool | str = pin_memory  # auto = pinned when training on a CUDA device
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
        _check_int("prefetch_factor", prefetch_factor, 1, allow_none=True)
        self.prefetch_factor = prefetch_factor  # batches loaded ahead by each worker (num_workers > 0)
        # Seed of the training patches, peeked from torch's RNG without advancing it when the module is built
        # (right after seed_everything): a single process and every DDP process agree on it, whatever they
        # draw later (Lightning re-seeds DDP processes after the model is built, a single process does not).
        with torch.random.fork_rng(devices=[]):
            self.data_seed = int(torch.randint(0, 2**62, ()).item())
        self._splits: Splits | None = None
        self._resume_batches: tuple[int, int] | None = None  # (epoch, training batches done) of a checkpoint
        self.datasets: dict[str, Dataset] = {}
        self.image_names: dict[str, list[str]] = {}
        self.eval_crops: dict[str, int | None] = {}

    # ----------------------------------------------------------------------------------------- loading

    def prepare_data(self) -> None:
        """Download CIFAR-10 when needed (other sources need no preparation)."""
        if self.source == "cifar10" and self.download:
            from datamodules.cifar10_reader import read_cifar10

            read_cifar10(str(self.root), train=False, download=True)

    def _load(self) -> Splits:
        if self.source == "skimage":
            return skimage_source(self.skimage_images)
        if self.source == "folder":
            return folder_source(
                self.root, self.val_fraction, self.test_fraction, self.split_seed, self.max_images
            )
        if self.source == "paired":
            return paired_source(
                self.root, self.val_fraction, self.test_fraction, self.split_seed, self.max_images
            )
        return cifar10_source(self.root, self.download, self.max_images, self.val_fraction, self.split_seed)

    def setup(self, stage: str | None = None) -> None:
        """Load and split the images and build the datasets (once; later calls return immediately)."""
        if self._splits is not None:
            return
        splits = self._load()
        if not splits["train"]:
            raise UserError(f"no training images for source={self.source}; add images to the train split")
        if not splits["val"]:
            raise UserError(f"no validation images for source={self.source}; add images to the val split")
        smallest = min(splits["train"], key=lambda it: min(it.size))
        if self.patch_size > min(smallest.size):
            raise UserError(
                f"patch_size {self.patch_size} is larger than training image {smallest.name} "
                f"({smallest.size[0]}x{smallest.size[1]}); set data.patch_size <= {min(smallest.size)}"
            )
        self.datasets = {
            "train": TrainPatches(
                splits["train"],
                self.channels,
                self.patch_size,
                self.patches_per_epoch,
                self.noise,
                seed=self.data_seed,
            )
        }
        for split in ("val", "test"):
            crop = self._eval_crop(split, splits[split])
            self.eval_crops[split] = crop
            self.datasets[split] = EvalImages(
                splits[split], self.channels, crop, self.eval_noise, self.noise_seed, split
            )
        self.image_names = {split: [it.name for it in splits[split]] for split in SPLITS}
        self._splits = splits
        log.info(
            "denoising data (%s): %d train / %d val / %d test images, eval crops %s, noise %s",
            self.source,
            *(len(splits[s]) for s in SPLITS),
            self.eval_crops,
            self.noise if self.noise is not None else "real (paired)",
        )

    def _eval_crop(self, split: str, items: list[ImageItem]) -> int | None:
        if not items:
            return self.eval_crop
        sizes = {it.size for it in items}
        if self.eval_crop is None:
            if len(sizes) > 1 and self.eval_batch_size > 1:
                raise UserError(
                    f"{split} images have different sizes, so eval_crop=null needs eval_batch_size=1 "
                    f"(got {self.eval_batch_size}); set data.eval_batch_size=1 or data.eval_crop to a size"
                )
            return None
        smallest = min(min(s) for s in sizes)
        if smallest < self.eval_crop:
            log.info("%s: eval_crop %d reduced to %d (smallest image side)", split, self.eval_crop, smallest)
        return min(self.eval_crop, smallest)

    # ----------------------------------------------------------------------------------------- loaders

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        if not self.datasets:
            self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise UserError(
                f"no {split} images for source={self.source}; set data.test_fraction > 0 or list test images"
            )
        trainer = attached_trainer(self)
        if isinstance(dataset, TrainPatches):
            dataset.ensure_seed()
            rank, world = rank_and_world(trainer)
            resume_at = None
            if self._resume_batches is not None:
                resume_at = (self._resume_batches[0], self._resume_batches[1] * batch_size)
                self._resume_batches = None
            sampler = PatchSampler(dataset, num_replicas=world, rank=rank, resume_at=resume_at)
        else:
            sampler = eval_sampler(dataset, trainer, split)
        extra: dict[str, Any] = {}
        if self.num_workers > 0 and self.prefetch_factor is not None:
            extra["prefetch_factor"] = self.prefetch_factor
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=resolve_pin_memory(self.pin_memory, trainer),
            persistent_workers=self.persistent_workers,
            **extra,
        )

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the current epoch, so a mid-epoch checkpoint resumes with the next patch."""
        trainer = attached_trainer(self)
        if trainer is None or not trainer.training:
            return {}
        # processed, not completed: a checkpoint written in on_train_batch_end (an interruption) has stepped on
        # a batch that Lightning counts as completed only when it resumes
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": int(trainer.current_epoch), "train_batches_done": int(done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember a mid-epoch position for the next training loader (see :meth:`state_dict`)."""
        done = int(state_dict.get("train_batches_done", 0))
        if done > 0:  # a finished epoch is never iterated again, so its count does no harm
            self._resume_batches = (int(state_dict["epoch"]), done)

    def train_dataloader(self) -> DataLoader:
        """Random patches with fresh noise, ``patches_per_epoch`` per epoch."""
        return self._loader("train", self.batch_size)

    def val_dataloader(self) -> DataLoader:
        """The validation images with fixed noise, in a fixed order."""
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The test images with fixed noise, in a fixed order."""
        return self._loader("test", self.eval_batch_size)
