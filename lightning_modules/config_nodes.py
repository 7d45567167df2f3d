"""Build the ``_target_`` nodes that LightningModules keep as plain dicts (``model.net``, ``model.loss``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from experiment_utils.errors import UserError
from experiment_utils.instantiation import instantiate_node


def require_target(node: Any, what: str) -> dict[str, Any]:
    """``node`` as a dict, or a one-line UserError naming the preset group when it has no ``_target_``."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        group = what.replace(".", "/")
        shown = dict(node) if isinstance(node, Mapping) else node
        raise UserError(
            f"{what} must be a config node with a _target_, got {shown!r}; "
            f"pick a preset with {group}=NAME (conf/{group}/) or give {what}._target_=package.module.Class"
        )
    return dict(node)


def build_module(node: Any, what: str) -> nn.Module:
    """Instantiate ``node`` (e.g. ``model.net``), which must build a ``torch.nn.Module``."""
    module = instantiate_node(require_target(node, what), what)
    if not isinstance(module, nn.Module):
        raise UserError(f"{what} must build a torch.nn.Module, got {type(module).__name__}")
    return module
