"""The datasets and sampler behind ``DenoisingDataModule``: random training patches, fixed val/test images.

``TrainPatches`` item ``epoch * length + i`` is training patch ``i`` of ``epoch``, drawn from a generator seeded
by ``patch_seed`` (the same patch in any process or worker); ``PatchSampler`` hands process r of W the
patches r, r + W, ... of the epoch. ``EvalImages`` draws the noise of val/test image ``index`` from a generator
seeded by ``eval_seed(noise_seed, split, index)``, so val/test batches are identical across epochs and runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.color import rgb2gray
from torch.utils.data import Dataset, DistributedSampler

from datamodules.clean_sources import ImageItem
from datamodules.image_io import to_float
from datamodules.noise import NoiseModel

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def to_tensor(array: np.ndarray, channels: int) -> torch.Tensor:
    """Pixels as stored ((H, W) or (H, W, 3), uint8/uint16) -> float32 (channels, H, W) in [0, 1]."""
    x = to_float(array)
    if x.ndim == 3 and channels == 1:
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
