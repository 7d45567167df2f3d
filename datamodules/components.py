"""Build a data module's pluggable parts (noise model, clean-image source) from ``_target_`` config nodes.

A data module receives such parts as plain dicts (so its hyperparameters stay plain and checkpoints load with
``weights_only=True``) and builds them here; an already built object of the expected interface is used as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from experiment_utils.errors import UserError
from experiment_utils.instantiation import instantiate_node
from experiment_utils.plain_config import to_plain

T = TypeVar("T")


def build_component(node: Any, interface: type[T], what: str) -> T:
    """The ``interface`` instance described by ``node``: a dict with ``_target_`` (and the class's arguments)
    or an instance already. ``what`` names the config key in error messages (e.g. ``data.noise``)."""
    if isinstance(node, interface):
        return node
    node = to_plain(node)
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise UserError(
            f"{what} must be a config with a _target_ (a {interface.__name__} class), got {node!r}; "
            f"pick a preset with {what.replace('.', '/')}=NAME"
        )
    built = instantiate_node(dict(node), what)
    if not isinstance(built, interface):
        raise UserError(
            f"{what}._target_={node['_target_']} built a {type(built).__name__}, "
            f"not a {interface.__name__} (subclass {interface.__module__}.{interface.__name__})"
        )
    return built


def is_plain(value: Any) -> bool:
    """True for None, numbers, strings and (nested) dicts/lists of them: what a checkpoint may store."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return False
