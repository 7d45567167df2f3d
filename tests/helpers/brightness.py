"""A user's own task, defined outside the framework: predict the mean brightness of an image (a regression).

Three parts, as a user would write them in their own package: a LightningModule, a LightningDataModule (sklearn
digits under random brightness, the target their mean pixel value) and the task kind that tells the scripts
how to export, average and report it, registered for the module when this file is imported. Nothing in the
library names it: ``tests/test_task_kinds.py`` trains, evaluates, ensembles and exports it through the scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanAbsoluteError

from imagelab.kinds import TaskKind


class BrightnessNet(nn.Module):
    """Two convs, then the spatial mean: (B, 1, H, W) images of any size -> (B, 1) brightness."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Predicted mean brightness of each image."""
        return self.body(x).mean(dim=(2, 3))


class BrightnessModule(pl.LightningModule):
    """Regress the mean brightness of an image with :class:`BrightnessNet` (MSE loss, Adam)."""

    default_objective = ("val/mae", "min")

    def __init__(self, width: int = 8, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = BrightnessNet(width)
        self.channels = 1
        self.val_mae, self.test_mae = MeanAbsoluteError(), MeanAbsoluteError()

    def forward(self, x: Tensor) -> Tensor:
        """Predicted brightness, (B, 1)."""
        return self.net(x)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        """MSE between predicted and true brightness."""
        loss = F.mse_loss(self(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def _score(self, split: str, metric: MeanAbsoluteError, batch: Sequence[Tensor]) -> None:
        pred = self(batch[0])
        metric.update(pred, batch[1])
        self.log(f"{split}/loss", F.mse_loss(pred, batch[1]))
        self.log(f"{split}/mae", metric)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        """Validation MAE and loss."""
        self._score("val", self.val_mae, batch)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        """Test MAE and loss."""
        self._score("test", self.test_mae, batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam at ``lr``."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class BrightnessData(pl.LightningDataModule):
    """sklearn's 8x8 digits, each scaled by a random brightness in [0.2, 1]; the target is its mean pixel."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Build every split (the same for any ``stage``): 1197 train, 300 val, 300 test images."""
        rng = np.random.default_rng(self.seed)
        images = load_digits().images.astype(np.float32) / 16.0
        images *= rng.uniform(0.2, 1.0, size=(len(images), 1, 1)).astype(np.float32)
        x = torch.from_numpy(images)[:, None]
        y = x.mean(dim=(2, 3))
        bounds = {"train": (0, 1197), "val": (1197, 1497), "test": (1497, len(x))}
        self.splits = {k: TensorDataset(x[a:b], y[a:b]) for k, (a, b) in bounds.items()}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader("test")


class MeanOutputs:
    """Brightness does not change under flips and turns; outputs of members and transforms are averaged."""

    def undo_transform(self, output: Tensor, k: int) -> Tensor:
        """Unchanged: the brightness of a turned image is the same."""
        return output

    def member_output(self, output: Tensor) -> Tensor:
        """Unchanged."""
        return output

    def average(self, outputs: Sequence[Tensor]) -> Tensor:
        """Mean prediction."""
        return torch.stack([o.float() for o in outputs]).mean(dim=0)


class BrightnessKind(TaskKind):
    """The brightness task: images of any size in, one number per image out, scored by MAE."""

    name = "brightness regressor"
    outputs = MeanOutputs()

    def metadata(self, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
        """One grey channel in, the brightness out."""
        return {
            "channels": 1,
            "input": "float32 (B, 1, H, W) in [0, 1]",
            "output": "float32 (B, 1) brightness",
        }

    def export_axes(self) -> tuple[dict[int, str], dict[int, str]]:
        """Any batch and image size in; one value per image out."""
        return {0: "batch", 2: "height", 3: "width"}, {0: "batch"}

    def test_metrics(self, run: Any, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Mean absolute error of the predicted brightness."""
        mae = MeanAbsoluteError()
        with torch.inference_mode():
            for images, targets in batches:
                mae.update(run(images).float(), targets.float())
        return {"mae": float(mae.compute())}


BRIGHTNESS = BrightnessKind().register(BrightnessModule)
