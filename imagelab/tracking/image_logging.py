"""Send image panels to whichever loggers a Trainer has (W&B, TensorBoard, or PNG files for the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imagelab.core.atomic import atomic_write


def _to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def log_image_panels(
    trainer: Any, key: str, images: list[np.ndarray], captions: list[str] | None = None
) -> None:
    """Log ``images`` (H×W×C uint8, or float in [0, 1]) under ``key`` to every logger of ``trainer``.

    W&B gets an image list, TensorBoard an image per panel; loggers without image support (CSV) get PNG files
    in ``<log_dir>/panels/``. Only rank zero logs.
    """
    if not images or not getattr(trainer, "is_global_zero", True):
        return
    panels = [_to_uint8_hwc(img) for img in images]
    captions = list(captions) if captions is not None else [f"{key}_{i}" for i in range(len(panels))]
    step = int(getattr(trainer, "global_step", 0))
    for logger in getattr(trainer, "loggers", []):
        name = type(logger).__name__
        if name == "WandbLogger":
            logger.log_image(key=key, images=panels, caption=captions, step=None)
        elif name == "TensorBoardLogger":
            for i, panel in enumerate(panels):
                logger.experiment.add_image(f"{key}/{i}", panel, global_step=step, dataformats="HWC")
        else:
            log_dir = getattr(logger, "log_dir", None) or getattr(trainer, "default_root_dir", ".")
            _save_pngs(Path(log_dir) / "panels", key, step, panels)


def _save_pngs(folder: Path, key: str, step: int, panels: list[np.ndarray]) -> None:
    safe_key = key.replace("/", "_")
    for i, panel in enumerate(panels):
        atomic_write(
            folder / f"{safe_key}_step{step:06d}_{i}.png", lambda tmp, p=panel: Image.fromarray(p).save(tmp)
        )
