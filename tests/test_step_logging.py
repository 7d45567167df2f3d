"""Step values logged only where a logger sees them: the loggers get exactly what per-step self.log gave."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.loggers.logger import Logger  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

from lightning_modules.classifier import ClassifierModule  # noqa: E402
from lightning_modules.classifier_scoring import classification_loss  # noqa: E402
from lightning_modules.denoiser import DenoiserModule  # noqa: E402
from lightning_modules.step_logging import (  # noqa: E402
    DeviceSum,
    epoch_mean,
    should_log_step,
    update_epoch_mean,
)


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as (step, {name: value})."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        train = {k: float(v) for k, v in metrics.items() if k.startswith("train/")}
        if train:
            self.calls.append((int(step or 0), train))


class DenoiserLoggingEveryStep(DenoiserModule):
    """The denoiser's former training step: ``self.log`` on every step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        noisy, clean = batch
        loss = self.loss_fn(self(noisy), clean)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(noisy))
        return loss


class ClassifierLoggingEveryStep(ClassifierModule):
    """The classifier's former training step: loss on step and epoch, accuracy object, every step."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self.old_acc = MulticlassAccuracy(self.num_classes, average="micro").to(self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = classification_loss(logits, y, self.hparams["label_smoothing"])
        self.old_acc(logits.detach(), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/acc", self.old_acc, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def on_train_epoch_end(self) -> None:
        pass


def _fit(module: pl.LightningModule, data: TensorDataset) -> tuple[RecordingLogger, pl.Trainer]:
    logger = RecordingLogger()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        log_every_n_steps=4,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    # 7 batches per epoch, the last one smaller: epoch means are weighted by images
    trainer.fit(module, DataLoader(data, batch_size=6, shuffle=False))
    return logger, trainer


def _same_calls(new: RecordingLogger, old: RecordingLogger) -> None:
    assert [(s, sorted(m)) for s, m in new.calls] == [(s, sorted(m)) for s, m in old.calls]
    for (_, a), (_, b) in zip(new.calls, old.calls, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_denoiser_logs_the_same_steps_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(40, 1, 12, 12, generator=g)
    data = TensorDataset(clean + 0.1 * torch.randn(clean.shape, generator=g), clean)
    net = {"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 3, "width": 4}
    runs = []
    for cls in (DenoiserModule, DenoiserLoggingEveryStep):
        torch.manual_seed(0)
        runs.append(_fit(cls(net=net, scheduler=None, num_panels=0), data))
    (new, trainer), (old, _) = runs
    # every log_every_n_steps=4 steps (3, 7, 11) and each epoch's end (6, 13: train/loss_epoch); 14 steps
    assert [s for s, _ in new.calls] == [3, 6, 7, 11, 13]
    _same_calls(new, old)
    # the last batch is logged too: callback_metrics hold the final step's loss, as before
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(
        float(runs[1][1].callback_metrics["train/loss"])
    )


@pytest.mark.slow
def test_classifier_logs_the_same_names_steps_and_values() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(40, 3, 16, 16, generator=g)
    data = TensorDataset(images, torch.arange(40) % 4)
    kwargs = {"backbone": "small_cnn", "num_classes": 4, "timm_kwargs": {"widths": [4]}, "scheduler": None}
    runs = []
    for cls in (ClassifierModule, ClassifierLoggingEveryStep):
        torch.manual_seed(0)
        runs.append(_fit(cls(**kwargs), data))
    (new, trainer), (old, old_trainer) = runs
    keys = {k for _, m in new.calls for k in m}
    assert keys == {"train/loss_step", "train/loss_epoch", "train/acc"}
    _same_calls(new, old)
    for key in ("train/loss", "train/loss_step", "train/loss_epoch", "train/acc"):
        assert float(trainer.callback_metrics[key]) == pytest.approx(
            float(old_trainer.callback_metrics[key]), rel=1e-5
        )


class ClassifierLoggingLossMetric(ClassifierModule):
    """The classifier's former validation: ``val/loss`` logged as the ``MeanMetric`` object every step."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(torch.nn.functional.cross_entropy(logits.float(), y), weight=len(y))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.val_metrics.update(logits.detach(), y)

    def on_validation_epoch_end(self) -> None:
        self.val_metrics.reset()


class ValLossPerEpoch(pl.Callback):
    """``val/loss`` as each validation ended."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.values.append(float(trainer.callback_metrics["val/loss"]))


def test_classifier_val_loss_is_the_value_the_logged_metric_gave() -> None:
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(40, 3, 16, 16, generator=g), torch.arange(40) % 4)
    kwargs = {"backbone": "small_cnn", "num_classes": 4, "timm_kwargs": {"widths": [4]}, "scheduler": None}
    seen = []
    for cls in (ClassifierModule, ClassifierLoggingLossMetric):
        torch.manual_seed(0)
        recorder = ValLossPerEpoch()
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            callbacks=[recorder],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        # validation batches of 16, 16 and 8 images: the epoch value is weighted by images
        loader = DataLoader(data, batch_size=16, shuffle=False)
        trainer.fit(cls(**kwargs), loader, loader)
        seen.append(recorder.values)
    assert len(seen[0]) == 3  # the sanity check and two epochs
    assert seen[0] == pytest.approx(seen[1], rel=1e-6)


def test_should_log_step_and_the_weighted_epoch_mean() -> None:
    assert should_log_step(object(), 0)  # outside a Trainer
    mean = epoch_mean()
    update_epoch_mean(mean, torch.tensor(1.0), 3)
    update_epoch_mean(mean, torch.tensor(4.0), 1)
    assert float(mean.compute()) == pytest.approx(7 / 4)  # weighted by images, not by calls
    sums, mean = DeviceSum(), epoch_mean()
    assert not sums.flush_into(mean)  # nothing added: the metric is left alone
    sums.add(torch.tensor(3), 4)  # e.g. 3 correct of 4 images
    sums.add(torch.tensor(2.0), 1)
    assert sums.flush_into(mean) and sums.total is None and sums.weight == 0
    assert float(mean.compute()) == pytest.approx(5 / 5)
    mean.reset()
    sums.add(torch.tensor(1), 4)
    sums.flush_into(mean)
    assert float(mean.compute()) == pytest.approx(1 / 4) and mean.update_count == 1
