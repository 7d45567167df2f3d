"""Several checkpoints as one model: ``ckpt_path=[a.ckpt,b.ckpt,...]`` for eval.py, predict.py, denoise.py.

Members must be the same kind of model; classifiers the same classes (in the same order) and the same
preprocessing (the data is built from the first member's run config), denoisers the same number of channels.
The ensemble averages class probabilities or denoised images (``lightning_modules.tta.AverageNet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint, model_kind
from imagelab.core.errors import UserError
from lightning_modules.tta import average_into, wrap_tta


@dataclass
class Member:
    """One checkpoint of an ensemble: its path, the loaded checkpoint, its run config and the rebuilt module."""

    path: str
    checkpoint: dict[str, Any]
    run_cfg: DictConfig
    module: Any


def checkpoint_paths(value: Any) -> list[str]:
    """``ckpt_path`` as a list of paths: one path, or a list ``[a.ckpt, b.ckpt]`` (duplicates refused)."""
    if isinstance(value, ListConfig | list | tuple):
        paths = [str(v) for v in value]
    elif value is None or str(value) in ("", "???"):
        paths = []
    else:
        paths = [str(value)]
    if not paths:
        raise UserError("ckpt_path is empty: give a checkpoint or a list [a.ckpt,b.ckpt] for an ensemble")
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise UserError(f"ckpt_path lists {duplicates[0]} more than once: an ensemble needs distinct members")
    return paths


def _signature(member: Member, kind: str) -> tuple[Any, ...]:
    """What must agree between members for them to share data and be averaged."""
    module = member.module
    if kind == "classifier":
        pre = dict(module.preprocess or {})
        return (
            tuple(module.class_names or []),
            tuple(pre.get("image_size") or ()),
            pre.get("channels"),
            tuple(pre.get("mean") or ()),
            tuple(pre.get("std") or ()),
        )
    return (getattr(module, "channels", None),)


def load_members(value: Any, expected_kind: str | None = None) -> tuple[list[Member], str]:
    """Load every checkpoint of ``ckpt_path`` with its module; check they can form an ensemble.

    Returns the members and their kind (``classifier`` / ``denoiser``). Raises UserError when the kinds,
    classes, preprocessing or channels differ, naming the first member that does not match.
    """
    members = []
    for path in checkpoint_paths(value):
        checkpoint, run_cfg = load_run_checkpoint(path, expected_kind=expected_kind)
        members.append(Member(path, checkpoint, run_cfg, build_module_from_checkpoint(checkpoint, run_cfg)))
    kind = model_kind(members[0].run_cfg)
    for member in members[1:]:
        other = model_kind(member.run_cfg)
        if other != kind:
            raise UserError(
                f"ensemble members differ: {members[0].path} is a {kind}, {member.path} a {other}"
            )
    if len(members) > 1 and kind not in ("classifier", "denoiser"):
        raise UserError(f"ensembles need classifier or denoiser checkpoints, not {kind}")
    first = _signature(members[0], kind)
    what = "classes and preprocessing" if kind == "classifier" else "number of channels"
    for member in members[1:]:
        if _signature(member, kind) != first:
            raise UserError(
                f"ensemble members differ in their {what}: {member.path} does not match {members[0].path} "
                f"({_signature(member, kind)} vs {first}); an ensemble needs models of the same task"
            )
    return members, kind


def combine(members: list[Member], kind: str, tta: str = "none") -> Any:
    """The first member's module with its network replaced by the members' average under TTA ``tta``."""
    module = average_into([m.module for m in members], kind)
    return wrap_tta(module, tta, kind).eval()
