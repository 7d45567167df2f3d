"""Turn the omegaconf containers Hydra passes into plain Python, as checkpoints and validation need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from imagelab.core.errors import UserError


def to_plain(value: Any) -> Any:
    """``value`` with every omegaconf container (also nested in dicts/lists) resolved into dicts/lists.

    Hyper-parameters saved in checkpoints must be plain so they load with ``torch.load(weights_only=True)``.
    """
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def check_int(key: str, value: Any, low: int, allow_none: bool = False) -> Any:
    """``value`` when it is an integer >= ``low`` (or None when allowed), else a UserError naming ``key``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        extra = " or null" if allow_none else ""
        raise UserError(f"{key} must be an integer >= {low}{extra}, got {value!r}")
    return value


def is_plain(value: Any) -> bool:
    """True for None, numbers, strings and (nested) dicts/lists of them: what a checkpoint may store."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return False
