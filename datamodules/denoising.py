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
Under DDP every val/test image is scored exactly once (``imagelab.core.distributed.eval_sampler``):
process r gets images r, r + W, ...; processes may run one batch more or less than each other, and the last
batch of a process may be partial (nothing is padded or dropped).
If ``eval_crop`` is larger than the smallest image of a split the crop is reduced to that image's smaller
side for the whole split (so batches still collate); with ``eval_crop=None`` images are used whole, which
needs equal sizes or ``eval_batch_size=1``.

Channels: with ``channels=1`` colour images become gray by luminance (``skimage.color.rgb2gray``), with
``channels=3`` gray images are repeated to RGB. ``source`` and ``noise`` / ``eval_noise`` are ``_target_``
config nodes (plain dicts, presets in ``conf/data/source/`` and ``conf/data/noise/``) built here: see
``datamodules.clean_sources`` for the sources and their splits, ``datamodules.noise`` for the noise models. For
a paired source (``PairedFolders``) the real noisy image is used (the same crop and orientation as the clean
one) and ``noise`` is ignored.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.clean_sources import SPLITS, CleanSource, ImageItem, Splits, build_source
from datamodules.denoising_datasets import EvalImages, PatchSampler, TrainPatches
from datamodules.loaders import build_loader, check_int, check_pin_memory
from datamodules.noise import NoiseModel, build_noise
from imagelab.core.distributed import attached_trainer, eval_sampler, rank_and_world
from imagelab.core.errors import UserError
from imagelab.core.plain_config import is_plain, to_plain

log = logging.getLogger(__name__)


class DenoisingDataModule(pl.LightningDataModule):
    """(noisy, clean) batches for denoising: skimage photos, a folder, CIFAR-10 or real noisy/clean pairs.

    See the module docstring for how patches, crops, splits and noise are made; ``channels`` is the number of
    image channels of every tensor (1 gray, 3 RGB). ``image_names`` maps each split to its image names after
    ``setup``.
    """

    def __init__(
        self,
        source: Any = None,
        noise: Any = None,
        eval_noise: Any = None,
        channels: int = 1,
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
        source, noise, eval_noise = (to_plain(v) for v in (source, noise, eval_noise))
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 (gray) or 3 (RGB), got {channels!r}")
        for key, value, low in (
            ("patch_size", patch_size, 1),
            ("patches_per_epoch", patches_per_epoch, 1),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
            ("noise_seed", noise_seed, 0),
        ):
            check_int(key, value, low)
        check_int("eval_crop", eval_crop, 1, allow_none=True)
        check_int("prefetch_factor", prefetch_factor, 1, allow_none=True)
        # the source and noise nodes are saved as given (plain dicts); objects passed in code are not saved
        self.save_hyperparameters(
            ignore=[
                k
                for k, v in (("source", source), ("noise", noise), ("eval_noise", eval_noise))
                if not is_plain(v)
            ]
        )
        self.source: CleanSource = build_source(source)
        # a paired source brings real noisy images: no synthetic noise is made
        self.noise: NoiseModel | None = None if self.source.paired else build_noise(noise)
        # val/test noise: its own model when given (e.g. fixed sigma for a blind model), else the training one
        self.eval_noise: NoiseModel | None = (
            self.noise
            if self.source.paired or eval_noise is None
            else build_noise(eval_noise, "data.eval_noise")
        )
        self.channels = channels
        self.patch_size = patch_size
        self.patches_per_epoch = patches_per_epoch
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.eval_crop = eval_crop
        self.noise_seed = noise_seed
        self.num_workers = num_workers
        self.pin_memory: bool | str = check_pin_memory(pin_memory)  # auto = pinned when training on CUDA
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
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
        """Let the source fetch what it needs (e.g. the CIFAR-10 download)."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load and split the images and build the datasets (once; later calls return immediately)."""
        if self._splits is not None:
            return
        splits = self.source.load()
        if not splits["train"]:
            raise UserError(f"no training images from {self.source!r}; add images to the train split")
        if not splits["val"]:
            raise UserError(f"no validation images from {self.source!r}; add images to the val split")
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

    def split_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (after ``setup``); UserError when the split has no images."""
        if not self.datasets:
            self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise UserError(
                f"no {split} images from {self.source!r}; set data.source.test_fraction > 0 or list test images"
            )
        return dataset

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        dataset = self.split_dataset(split)
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
        return build_loader(
            dataset,
            batch_size,
            trainer=trainer,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
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
