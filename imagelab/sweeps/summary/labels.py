"""Text of the summary: values as compact table cells, axis labels with units, log-scale choice."""

from __future__ import annotations

import re
from typing import Any

LOG_SCALE_PARAMS = re.compile(r"(^|[._/])(lr|learning_rate|weight_decay|wd|eps)$")
# x-axis descriptions of common parameters: (last key part) -> label with unit
PARAM_LABELS = {
    "lr": "learning rate",
    "learning_rate": "learning rate",
    "weight_decay": "weight decay",
    "sigma": "noise σ (0-255 scale)",
    "width": "width (channels per layer)",
    "depth": "depth (layers)",
    "rank": "LoRA rank",
    "batch_size": "batch size (images per device)",
    "max_epochs": "epochs",
    "patch_size": "patch size (pixels)",
}


def fmt(value: Any) -> str:
    """Compact, table-friendly text for a value (4 significant digits for floats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return (
            f"{value:.4g}" if abs(value) < 1 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def metric_label(metric: str | None, mode: str | None = None) -> str:
    """Axis label of a metric with its unit and which way is better."""
    if not metric:
        return "objective"
    leaf = metric.split("/")[-1]
    unit = ""
    if "psnr" in leaf:
        unit = " (dB)"
    elif "acc" in leaf or "ssim" in leaf:
        unit = " (0-1)"
    better = {"max": ", higher is better", "min": ", lower is better"}.get(mode or "", "")
    return f"{metric}{unit}{better}"


def param_label(name: str, log_scale: bool) -> str:
    """Axis label of a swept parameter: its key, a plain description with unit, and the scale."""
    leaf = name.split(".")[-1]
    described = PARAM_LABELS.get(leaf)
    label = f"{name} — {described}" if described else name
    return f"{label} (log scale)" if log_scale else label


def is_numeric(values: list[Any]) -> bool:
    """True when every value is a number (booleans are not): such a parameter gets a numeric axis."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def use_log_scale(name: str, values: list[Any]) -> bool:
    """Log x-axis for learning rates / weight decays, and for positive numbers spanning two decades."""
    if not values or not is_numeric(values) or min(values) <= 0:
        return False
    return bool(LOG_SCALE_PARAMS.search(name)) or max(values) / min(values) >= 100
