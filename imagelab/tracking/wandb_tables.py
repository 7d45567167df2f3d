"""Per-image test results as W&B Tables, and the interactive confusion matrix.

:class:`PerImageTable` (``conf/callbacks/per_image_table.yaml``) reads what the module's ``test_step``
returns (the denoised batch, or the logits) and builds one row per test image:

* denoiser: ``image``, ``noisy`` | ``denoised`` | ``clean`` thumbnails, ``psnr_in``/``psnr_out`` (dB) and
  ``ssim_in``/``ssim_out`` of the input and of the output against the clean image;
* classifier: ``image`` (name), ``thumbnail``, ``true``, ``predicted``, ``confidence``, ``correct`` and
  ``top_k`` (the k most probable classes with their probabilities).

The table is logged once, at the end of testing, under ``test/images``. Only rank zero builds it (its shard of
the test images under DDP); without a W&B logger the callback does nothing.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import wandb
from PIL import Image
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from imagelab.core.errors import UserError
from imagelab.tracking.wandb_run import wandb_loggers

TABLE_KEY = "test/images"
PREDICT_TABLE_KEY = "predict/images"
PREDICT_TABLE_ROWS = 256  # images with a thumbnail in the predictions table (all get a row)
PREDICT_COLUMNS = ["file", "image", "predicted", "confidence", "top_k"]
CONFUSION_PLOT_KEY = "test/confusion_matrix_plot"
DENOISER_COLUMNS = ["image", "noisy", "denoised", "clean", "psnr_in", "psnr_out", "ssim_in", "ssim_out"]
CLASSIFIER_COLUMNS = ["image", "thumbnail", "true", "predicted", "confidence", "correct", "top_k"]


def thumbnail(image: np.ndarray | Tensor, max_side: int) -> np.ndarray:
    """H x W (x C) uint8 thumbnail whose longest side is at most ``max_side``.

    Accepts uint8, uint16 or float-in-[0, 1] arrays (H x W or H x W x C) and (C, H, W) tensors."""
    if isinstance(image, Tensor):
        array = image.detach().cpu()
        array = array.permute(1, 2, 0).numpy() if array.ndim == 3 else array.numpy()
    else:
        array = np.asarray(image)
    if array.dtype == np.uint16:  # 16-bit files
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:  # float images in [0, 1]
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    pil = Image.fromarray(array)
    if max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _test_names(trainer: Any, start: int, count: int) -> list[str]:
    """Names of test images ``start .. start + count - 1`` (file or photo names when the data knows them)."""
    datamodule = getattr(trainer, "datamodule", None)
    names: list[str] = []
    if getattr(trainer, "world_size", 1) == 1 and datamodule is not None:
        image_names = getattr(datamodule, "image_names", None)
        if isinstance(image_names, dict) and image_names.get("test"):
            names = [str(n) for n in image_names["test"]]
        splits = getattr(datamodule, "splits", None)
        if not names and isinstance(splits, dict) and "test" in splits:
            images = splits["test"].images
            if isinstance(images, list):
                names = [getattr(p, "name", str(p)) for p in images]
    return [names[i] if i < len(names) else f"test #{i}" for i in range(start, start + count)]


class PerImageTable(pl.Callback):
    """Log a W&B Table with one row per test image (see the module docstring for its columns).

    ``max_rows`` caps the rows (the first test images), ``thumbnail_px`` the longest side of each thumbnail,
    ``top_k`` the classes listed per image by a classifier.
    """

    def __init__(self, max_rows: int = 256, thumbnail_px: int = 128, top_k: int = 3, key: str = TABLE_KEY):
        if int(max_rows) < 1 or int(thumbnail_px) < 8 or int(top_k) < 1:
            raise UserError(
                "callbacks.per_image_table needs max_rows >= 1, thumbnail_px >= 8 and top_k >= 1, "
                f"got {max_rows}, {thumbnail_px}, {top_k}"
            )
        self.max_rows, self.thumbnail_px, self.top_k, self.key = (
            int(max_rows),
            int(thumbnail_px),
            int(top_k),
            key,
        )
        self.rows: list[list[Any]] = []
        self.columns: list[str] = []
        self._seen = 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start an empty table."""
        self.rows, self.columns, self._seen = [], [], 0

    @torch.no_grad()
    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Add the rows of one test batch (until ``max_rows``)."""
        if not isinstance(outputs, Tensor) or not wandb_loggers(trainer):
            return
        x, target = batch[0], batch[1]
        start, want = self._seen, self.max_rows - len(self.rows)
        self._seen += len(x)
        if want <= 0:
            return
        n = min(want, len(x))
        names = _test_names(trainer, start, n)
        if getattr(pl_module, "class_names", None) is not None:
            self.columns = CLASSIFIER_COLUMNS
            self.rows += self._classifier_rows(pl_module, names, x[:n], target[:n], outputs[:n])
        else:
            self.columns = DENOISER_COLUMNS
            self.rows += self._denoiser_rows(names, x[:n], target[:n], outputs[:n])

    def _denoiser_rows(self, names: list[str], noisy: Tensor, clean: Tensor, out: Tensor) -> list[list[Any]]:
        noisy, clean, out = (t.detach().float().clamp(0, 1) for t in (noisy, clean, out))

        def psnr(pred: Tensor) -> list[float]:
            values = peak_signal_noise_ratio(pred, clean, data_range=1.0, dim=(1, 2, 3), reduction="none")
            return [round(float(v), 3) for v in values]

        def ssim(pred: Tensor) -> list[float]:
            values = structural_similarity_index_measure(pred, clean, data_range=1.0, reduction="none")
            return [round(float(v), 4) for v in values]

        psnr_in, psnr_out, ssim_in, ssim_out = psnr(noisy), psnr(out), ssim(noisy), ssim(out)
        rows = []
        for i, name in enumerate(names):
            images = [wandb.Image(thumbnail(t[i], self.thumbnail_px)) for t in (noisy, out, clean)]
            rows.append([name, *images, psnr_in[i], psnr_out[i], ssim_in[i], ssim_out[i]])
        return rows

    def _classifier_rows(
        self, module: Any, names: list[str], x: Tensor, y: Tensor, logits: Tensor
    ) -> list[list[Any]]:
        classes = list(module.class_names)
        probs = logits.detach().float().softmax(dim=-1).cpu()
        k = min(self.top_k, probs.shape[-1])
        top_p, top_i = probs.topk(k, dim=-1)
        labels = y.argmax(dim=-1) if y.ndim == 2 else y
        denormalize = getattr(module, "_denormalize", None)
        rows = []
        for i, name in enumerate(names):
            image = denormalize(x[i].detach().float().cpu()) if callable(denormalize) else x[i]
            true, pred = classes[int(labels[i])], classes[int(top_i[i, 0])]
            top = ", ".join(
                f"{classes[int(c)]} {float(p):.3f}" for p, c in zip(top_p[i], top_i[i], strict=True)
            )
            rows.append(
                [
                    name,
                    wandb.Image(thumbnail(image, self.thumbnail_px)),
                    true,
                    pred,
                    round(float(top_p[i, 0]), 4),
                    true == pred,
                    top,
                ]
            )
        return rows

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the table to every W&B logger."""
        if not self.rows:
            return
        for logger in wandb_loggers(trainer):
            logger.experiment.log({self.key: wandb.Table(columns=self.columns, data=self.rows)})
        self.rows = []


def log_confusion_plot(trainer: Any, matrix: np.ndarray, class_names: list[str]) -> None:
    """Log ``matrix`` (rows: true, columns: predicted counts) as W&B's interactive confusion matrix.

    ``wandb.plot.confusion_matrix`` takes per-sample labels, so each cell's count is expanded into that many
    (true, predicted) pairs. Nothing happens without a W&B logger.
    """
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0]
    names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
    true = np.repeat(np.arange(k), counts.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(k), row) for row in counts]) if counts.sum() else np.array([])
    chart = wandb.plot.confusion_matrix(
        y_true=true.tolist(), preds=pred.tolist(), class_names=names, title="test confusion matrix"
    )
    for logger in loggers:
        logger.experiment.log({CONFUSION_PLOT_KEY: chart})


def log_prediction_table(
    loggers: list[Any], rows: list[tuple[str, list[tuple[str, float]]]], thumbnails: list[np.ndarray]
) -> None:
    """Log ``scripts/predict.py``'s results as the W&B table ``predict/images``: file, image (thumbnail, for
    the first :data:`PREDICT_TABLE_ROWS`), predicted class, its probability and the top-k."""
    data = []
    for i, (file, top) in enumerate(rows):
        image = wandb.Image(thumbnails[i]) if i < len(thumbnails) else None
        ranked = ", ".join(f"{name} {p:.3f}" for name, p in top)
        data.append([file, image, top[0][0], round(float(top[0][1]), 4), ranked])
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.log({PREDICT_TABLE_KEY: wandb.Table(columns=PREDICT_COLUMNS, data=data)})
