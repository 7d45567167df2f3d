"""The denoiser ``scripts/denoise.py`` uses when it is given no model: the newest trained photo model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from imagelab.core.errors import UserError

PHOTO_EXPERIMENT = "experiment=denoise_photo_color"


def _completed(run: Path) -> bool:
    try:
        return json.loads((run / "metrics.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def _is_photo_run(run: Path) -> bool:
    try:
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return False
    return PHOTO_EXPERIMENT in overrides


def photo_model_checkpoint(log_dir: Path) -> Path:
    """``best.ckpt`` of the newest completed ``experiment=denoise_photo_color`` run below ``log_dir``.

    Run folders start with their start time, so the newest is the last name in order. A UserError says how
    to get one when there is none.
    """
    runs_root = log_dir / "train" / "runs"
    runs = sorted(runs_root.glob("*/")) if runs_root.is_dir() else []
    for run in reversed(runs):
        best = run / "checkpoints" / "best.ckpt"
        if best.is_file() and _is_photo_run(run) and _completed(run):
            return best
    raise UserError(
        "no model given and no trained photo model below "
        f"{runs_root}: pass ckpt_path=<checkpoint> or model_path=<exported file>, or train the colour photo "
        f"model first (python scripts/train.py {PHOTO_EXPERIMENT}), which denoise.py then uses by default"
    )
