"""Batches that live on the training device, for the GPU-resident data modules (no DataLoader).

``DeviceBatches`` yields one epoch of batches made by a function (the epoch set by Lightning through
``sampler.set_epoch``, or a fresh pass number when nobody sets it); ``EvalBatches`` yields fixed val/test
batches. ``batch_seed`` seeds the device generator of one training batch; the ``data.device`` option becomes a
device through ``imagelab.core.devices.resolve_device``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]


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


def batch_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    """Seed of the device generator of training batch ``step`` of ``epoch`` on process ``rank``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank), int(step)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
