"""How the classifier is scored: its training loss (hard or mixed soft targets), per-split metric collections
and their logging, the confusion matrix and the grid of confidently misclassified test images."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from imagelab.tracking.image_logging import log_image_panels
from imagelab.tracking.wandb_tables import log_confusion_plot
from lightning_modules.classification_plots import confusion_matrix_image, image_grid
from lightning_modules.error_gallery import ConfidentErrors


def classification_loss(logits: Tensor, target: Tensor, smoothing: float) -> Tensor:
    """Cross-entropy with label smoothing of int labels (B,) or soft (B, K) targets from mixup/cutmix."""
    if target.ndim == 2:
        if smoothing > 0:
            target = target * (1.0 - smoothing) + smoothing / target.shape[1]
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)


def split_metrics(num_classes: int) -> MetricCollection:
    """top-1 (``acc``), ``top5`` (5+ classes), macro F1 and per-class accuracy for one split."""
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "acc_class": MulticlassAccuracy(num_classes, average="none"),
    }
    if num_classes >= 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


def log_split(
    module: pl.LightningModule, split: str, metrics: MetricCollection, class_names: list[str], per_class: bool
) -> Tensor:
    """Log ``<split>/acc``, the other metrics and (``per_class``) ``<split>/acc_class/<name>``; returns acc."""
    values = metrics.compute()
    metrics.reset()
    per_class_acc = values.pop("acc_class")
    acc = values.pop("acc")
    logged = {f"{split}/{k}": v for k, v in values.items()}
    if per_class:
        for name, value in zip(class_names, per_class_acc, strict=False):
            logged[f"{split}/acc_class/{name}"] = value
    module.log_dict(logged, on_epoch=True)
    module.log(f"{split}/acc", acc, on_epoch=True, prog_bar=split == "val")
    return acc


def denormalize(image: Tensor, preprocess: dict[str, Any] | None) -> np.ndarray:
    """A normalised (C, H, W) image back to an H x W x C float array in [0, 1]."""
    pre = preprocess or {}
    channels = image.shape[0]
    mean = torch.tensor(pre.get("mean", [0.0] * channels), dtype=image.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.get("std", [1.0] * channels), dtype=image.dtype).view(-1, 1, 1)
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def log_test_figures(
    trainer: pl.Trainer,
    matrix: np.ndarray,
    class_names: list[str],
    errors: ConfidentErrors,
    preprocess: dict[str, Any] | None,
) -> None:
    """Log the confusion matrix (PNG and W&B's interactive one) and the misclassified-images grid."""
    log_image_panels(
        trainer,
        "test/confusion_matrix",
        [confusion_matrix_image(matrix, class_names)],
        ["rows: true, columns: predicted"],
    )
    log_confusion_plot(trainer, matrix, class_names)  # W&B's interactive matrix beside the PNG
    selected = errors.select()
    if selected:
        images = [denormalize(s[0], preprocess) for s in selected]
        titles = [f"{class_names[t]} → {class_names[p]} ({c:.2f})" for _, t, p, c in selected]
        caption = f"{len(images)} most confident misclassified test images, spread over the true classes"
        log_image_panels(trainer, "test/misclassified", [image_grid(images, titles)], [caption])
