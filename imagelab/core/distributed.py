"""Multi-process (DDP) helpers: who am I, evaluation samplers that never duplicate, and LR scaling.

* ``rank_and_world(trainer)``: (global rank, world size) of the current process, (0, 1) outside a Trainer.
* ``eval_sampler(dataset, trainer, split)``: ``None`` on one process, else Lightning's
  ``UnrepeatedDistributedSampler``: rank r scores items r, r + W, r + 2W, ... so every val/test item is
  scored exactly once (Lightning's default ``DistributedSampler`` pads the split with duplicates instead).
  Ranks may get one batch more or less than each other, which is safe in evaluation because DDP only
  synchronises buffers on the first forward pass without gradients; every rank needs at least one item.
* ``lr_scale_factor(rule, global_batch, base_batch)``: the optional learning-rate scaling rule (applied by
  ``imagelab.callbacks.lr_scaling.LRScaling``, configured by ``lr_scaling`` in conf/train.yaml).

Lightning is imported inside the function that needs it: the console (``env_rank``) and the task wrapper
import this module before a run's config is checked, when Lightning must not be loaded yet.
"""

from __future__ import annotations

import math
import os
from typing import Any

from imagelab.core.errors import UserError

LR_SCALING_RULES: tuple[str, ...] = ("none", "linear", "sqrt")
"""The values accepted for ``lr_scaling.rule``."""


def rank_and_world(trainer: Any | None) -> tuple[int, int]:
    """(global rank, world size) of this process under ``trainer``; (0, 1) when there is no trainer."""
    if trainer is None:
        return 0, 1
    try:
        return int(trainer.global_rank), int(trainer.world_size)
    except (AttributeError, RuntimeError):
        return 0, 1


def attached_trainer(datamodule: Any) -> Any | None:
    """The Trainer a LightningDataModule is attached to, or None (used outside a Trainer, e.g. in tests)."""
    try:
        return datamodule.trainer
    except (AttributeError, RuntimeError):
        return None


def check_split_covers_world(size: int, world: int, split: str) -> None:
    """UserError when a val/test split of ``size`` items has fewer items than the ``world`` processes (a rank
    without a batch would wait forever for the others at the end of the epoch)."""
    if size < world:
        raise UserError(
            f"the {split} split has {size} item(s) but the run has {world} processes; every process needs at "
            f"least one: add {split} images or use fewer devices (trainer.devices)"
        )


def eval_sampler(dataset: Any, trainer: Any | None, split: str) -> Any | None:
    """Sampler for a val/test loader: None on one process, else an unrepeated distributed sampler.

    Raises UserError when the split has fewer items than there are processes (a rank without a batch would
    wait forever for the others at the end of the epoch).
    """
    rank, world = rank_and_world(trainer)
    if world <= 1:
        return None
    check_split_covers_world(len(dataset), world, split)
    # lazy: see the module docstring
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)


def lr_scale_factor(rule: str, global_batch: int, base_batch: int) -> float:
    """Multiplier of the learning rate: 1 (none), k (linear) or sqrt(k) (sqrt), k = global / base batch."""
    if rule not in LR_SCALING_RULES:
        raise UserError(f"unknown lr_scaling.rule {rule!r}; valid rules: {', '.join(LR_SCALING_RULES)}")
    if base_batch < 1 or global_batch < 1:
        raise UserError(
            f"lr_scaling needs positive batch sizes, got global {global_batch} and base {base_batch}"
        )
    k = global_batch / base_batch
    return {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[rule]


RANK_ENV_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID")
"""Where launchers put a process's rank (torchrun, Lightning's own launcher, ``srun``), in Lightning's order."""


def env_rank() -> int:
    """This process's rank as the launcher's environment gives it (the first of :data:`RANK_ENV_VARS`; 0 alone)."""
    for name in RANK_ENV_VARS:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0
