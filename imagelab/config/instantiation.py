"""Build objects from Hydra config nodes, turning config mistakes into one-line UserErrors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from imagelab.core.accelerator_check import check_accelerator
from imagelab.core.errors import UserError, first_line
from imagelab.core.plain_config import to_plain

T = TypeVar("T")


def _root_user_error(exc: BaseException) -> UserError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def instantiate_node(node: Any, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` that reports bad targets and keys as UserError.

    ``what`` names the config group in the message (e.g. ``data``, ``callbacks.early_stopping``).
    """
    if node is None or (isinstance(node, DictConfig) and "_target_" not in node):
        raise UserError(f"config '{what}' has no _target_: pick one with {what.split('.')[0]}=NAME")
    if what == "trainer":
        check_accelerator(node)  # trainer=gpu on a machine without CUDA: one line, not Lightning's traceback
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        user_error = _root_user_error(exc)
        if user_error is not None:
            raise user_error from None
        message = first_line(exc, limit=10_000)
        cause = exc.__cause__
        if isinstance(cause, TypeError | ValueError | ImportError | AttributeError):
            message = f"{message} ({type(cause).__name__}: {cause})" if str(cause) not in message else message
            raise UserError(f"cannot build '{what}': {message}; check its keys with --cfg job") from None
        raise


def require_target(node: Any, what: str) -> dict[str, Any]:
    """``node`` as a plain dict, or a one-line UserError naming the preset group when it has no ``_target_``.

    For the parts that models and data modules keep as plain dicts and build themselves (``model.net``,
    ``model.optimizer``, ``data.noise``, ``data.source``, ...).
    """
    node = to_plain(node)
    if not isinstance(node, Mapping) or "_target_" not in node:
        group = what.replace(".", "/")
        raise UserError(
            f"{what} must be a config node with a _target_, got {node!r}; "
            f"pick a preset with {group}=NAME (conf/{group}/) or give {what}._target_=package.module.Class"
        )
    return dict(node)


def build_instance(node: Any, interface: type[T], what: str, label: str | None = None) -> T:
    """The ``interface`` instance a ``_target_`` node describes (an instance already is used as is).

    ``what`` names the config key in messages; ``label`` how the interface is named there (default: its name).
    """
    if isinstance(node, interface):
        return node
    plain = require_target(node, what)
    built = instantiate_node(plain, what)
    if not isinstance(built, interface):
        raise UserError(
            f"{what} must build a {label or interface.__name__}, got {type(built).__name__}: "
            f"{plain['_target_']} is not a {interface.__name__}"
        )
    return built


def target_nodes(group_cfg: DictConfig | None, group: str) -> list[tuple[str, DictConfig]]:
    """The ``(name, node)`` entries of a group such as ``callbacks`` or ``logger``; null entries are skipped."""
    entries = []
    for name, node in (group_cfg or {}).items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(f"{group}.{name} must be a config with a _target_ (or null to disable it)")
        entries.append((name, node))
    return entries


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Any]:
    """Instantiate every callback under ``callbacks`` (entries set to null are skipped)."""
    return [
        instantiate_node(node, f"callbacks.{name}") for name, node in target_nodes(callbacks_cfg, "callbacks")
    ]
