"""Catch missing and mistyped command-line values in a second, before any heavy import.

A mandatory value left at ``???`` (``ckpt_path``, ``data.source.root``, ...) is reported as one line naming
every such key. A value given on the command line is compared with the value the same key has in the config composed with
only the config-group choices of that command line (the defaults the user started from): a number, bool or
list replaced by something of another kind is reported as one line naming the key and the expected type.
"""

from __future__ import annotations

from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from imagelab.core.errors import UserError

_MISSING = object()
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", list: "a list [a,b,...]"}


def _kind(value: Any) -> type | None:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, list | tuple | ListConfig):
        return list
    return None


def type_mismatch(key: str, default: Any, given: Any) -> str | None:
    """Why ``given`` cannot replace ``default`` at ``key`` (one line), or None when it can."""
    expected = _kind(default)
    if expected is None or given is None:
        return None
    got = _kind(given)
    compatible = got == expected or (expected is float and got is int)
    if compatible:
        return None
    return (
        f"{key}={given!r} is not {_KIND_NAMES[expected]} (its default is {default!r}); "
        f"give {key}=<{_KIND_NAMES[expected]}>"
    )


def _value_overrides(task_overrides: list[str], groups: set[str]) -> tuple[list[str], list[str]]:
    """Split command-line overrides into config-group choices and ``key=value`` changes of existing keys."""
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    group_choices, keys = [], []
    for override, text in zip(parsed, task_overrides, strict=True):
        key = override.key_or_group
        if key.replace(".", "/") in groups or override.package is not None:
            group_choices.append(text)
        elif not override.is_delete() and not override.is_add() and not override.is_sweep_override():
            keys.append(key)
    return group_choices, keys


def missing_keys(cfg: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """Full keys of the values left at ``???`` in ``cfg``, without resolving any interpolation."""
    found: list[str] = []
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        full = f"{prefix}[{key}]" if isinstance(cfg, ListConfig) else f"{prefix}{'.' if prefix else ''}{key}"
        node = cfg._get_node(key)
        if OmegaConf.is_missing(cfg, key):
            found.append(full)
        elif (
            isinstance(node, DictConfig | ListConfig)
            and not OmegaConf.is_interpolation(cfg, key)
            and not node._is_none()
        ):
            found.extend(missing_keys(node, full))
    return found


def missing_values_message(cfg: DictConfig) -> str | None:
    """One line naming every mandatory key (``???``) that ``cfg`` leaves unset, or None when there is none."""
    missing = sorted(key for key in missing_keys(cfg) if key.split(".")[0] != "hydra")  # Hydra fills its own
    if not missing:
        return None
    keys = ", ".join(missing)
    example = " ".join(f"{key}=..." for key in missing)
    noun = "a required value" if len(missing) == 1 else "required values"
    return f"{keys}: {noun} not given (??? in the config); add {example} to the command line"


def check_config(cfg: DictConfig) -> None:
    """Raise UserError for a mandatory value left unset, then for a mistyped command-line value."""
    problem = missing_values_message(cfg)
    if problem:
        raise UserError(problem)
    check_override_types(cfg)


def check_override_types(cfg: DictConfig) -> None:
    """Raise UserError for a command-line value whose type does not fit its key (inside a Hydra app only)."""
    if not HydraConfig.initialized() or not GlobalHydra.instance().is_initialized():
        return
    hc = HydraConfig.get()
    task_overrides = list(hc.overrides.task)
    if not task_overrides or not hc.job.config_name:
        return
    groups = {str(k) for k in hc.runtime.choices}
    group_choices, keys = _value_overrides(task_overrides, groups)
    if not keys:
        return
    # the user's own config folders (hydra.searchpath=[file://...]) hold group options too
    searchpath = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")]
    base = compose(config_name=hc.job.config_name, overrides=[*searchpath, *group_choices])
    for key in keys:
        default = OmegaConf.select(base, key, default=_MISSING, throw_on_resolution_failure=False)
        given = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False)
        if default is _MISSING or given is _MISSING:
            continue
        if isinstance(default, DictConfig | ListConfig):
            default = OmegaConf.to_container(default, resolve=False)
        if isinstance(given, DictConfig | ListConfig):
            given = OmegaConf.to_container(given, resolve=False)
        problem = type_mismatch(key, default, given)
        if problem:
            raise UserError(problem)
