"""The data a deployed model is checked and scored on: the test split (and training images for calibration)
of the run the checkpoint comes from, rebuilt from the run config it carries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from imagelab.config.instantiation import instantiate_node
from imagelab.deploy.source import DeploySource


def datamodule_for(source: DeploySource, stage: str) -> Any:
    """The checkpoint's datamodule, set up for ``stage`` (``fit`` or ``test``).

    The model was rebuilt from the checkpoint (classes and preprocessing included); the datamodule resolves its
    own transforms from its config (for a classifier: ``data.backbone`` gives the backbone's defaults)."""
    datamodule = instantiate_node(source.run_cfg.data, "data")
    datamodule.setup(stage)
    return datamodule


def test_batches(datamodule: Any) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs, targets) batches of the test split: (noisy, clean) for denoisers, (images, labels) else."""
    for batch in datamodule.test_dataloader():
        yield batch[0].float(), batch[1]


def sample_inputs(datamodule: Any, count: int) -> Tensor:
    """The first ``count`` test inputs as one float batch (real images: parity and latency run on them)."""
    chunks: list[Tensor] = []
    for inputs, _ in test_batches(datamodule):
        chunks.extend(x for x in inputs if x.shape == (chunks or inputs)[0].shape)  # one size: one batch
        if len(chunks) >= count:
            break
    return torch.stack(chunks[:count])


def calibration_inputs(datamodule: Any, count: int) -> list[Tensor]:
    """``count`` training inputs, one (1, C, H, W) tensor each, for static int8 calibration."""
    out: list[Tensor] = []
    torch.manual_seed(0)  # the same random training crops every run
    for batch in datamodule.train_dataloader():
        out.extend(x[None].float() for x in batch[0])
        if len(out) >= count:
            break
    return out[:count]
