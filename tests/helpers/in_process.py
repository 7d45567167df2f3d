"""Train in the test's own process (no interpreter start per run) and undo the process-wide torch flags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import compose


@pytest.fixture(autouse=True)
def restore_torch_flags() -> Iterator[None]:
    """The speed switches set process-wide torch flags; put them back after each test (import it to use)."""
    benchmark, precision = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    yield
    torch.backends.cudnn.benchmark = benchmark
    torch.set_float32_matmul_precision(precision)


def train_in_process(tmp_path: Path, *overrides: str) -> dict:
    """``imagelab.tasks.training.train`` on the composed train config; the W&B run is always closed."""
    from imagelab.tasks.runner import finish_wandb
    from imagelab.tasks.training import train

    cfg = compose("train", list(overrides), output_dir=tmp_path)
    try:
        return train(cfg)
    finally:
        finish_wandb()
