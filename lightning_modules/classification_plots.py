"""Images the classifier logs at test time: a confusion matrix and a grid of misclassified images.

Both are drawn with matplotlib's object API on an Agg canvas (no pyplot, no display needed) and returned as
H x W x 3 uint8 arrays for ``imagelab.tracking.image_logging.log_image_panels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _render(fig: Any) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_matrix_image(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    Cell text is drawn for up to 20 classes and tick labels for up to 50; larger matrices are drawn as a heat map.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0]
    names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, np.maximum(rows, 1), dtype=np.float64)
    size = min(4.0 + 0.45 * k, 16.0)
    fig = Figure(figsize=(size, size * 0.9), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 50:
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {100 * accuracy:.2f} %, {counts.sum()} images)")
    fig.tight_layout()
    return _render(fig)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 8) -> np.ndarray:
    """Grid of H x W x C float images in [0, 1] (gray or RGB), each with its title above it."""
    n = len(images)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(1.9 * columns, 2.1 * rows), dpi=100)
    for i, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        ax.imshow(
            array, cmap="gray" if array.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return _render(fig)
