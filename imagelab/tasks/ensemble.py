"""Several checkpoints as one model: ``ckpt_path=[a.ckpt,b.ckpt,...]`` for eval.py, predict.py, denoise.py.

Members must be the same kind of model and share what their task kind says (``TaskKind.ensemble_signature``):
classifiers the same classes (in the same order) and the same preprocessing (the data is built from the first
member's run config), denoisers the same number of channels. The ensemble averages outputs as the kind says
(class probabilities, denoised images: ``lightning_modules.tta.AverageNet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
from imagelab.core.errors import UserError
from imagelab.kinds import TaskKind, kind_of, require_outputs
from lightning_modules.tta import average_into, transforms_of, wrap_tta


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


def load_members(value: Any, expected_kind: TaskKind | None = None) -> tuple[list[Member], TaskKind]:
    """Load every checkpoint of ``ckpt_path`` with its module; check they can form an ensemble.

    Returns the members and their task kind. Raises UserError when a member is not of ``expected_kind``, or
    when the kinds, classes, preprocessing or channels differ, naming the first member that does not match.
    """
    members = []
    for path in checkpoint_paths(value):
        expected = expected_kind.name if expected_kind is not None else None
        checkpoint, run_cfg = load_run_checkpoint(path, expected_kind=expected)
        members.append(Member(path, checkpoint, run_cfg, build_module_from_checkpoint(checkpoint, run_cfg)))
    kind = kind_of(members[0].run_cfg)
    for member in members[1:]:
        other = kind_of(member.run_cfg)
        if other.name != kind.name:
            raise UserError(
                f"ensemble members differ: {members[0].path} is a {kind.name}, {member.path} a {other.name}"
            )
    if len(members) > 1:
        require_outputs(kind, "ensembles")
    first = kind.ensemble_signature(members[0].module)
    for member in members[1:]:
        if kind.ensemble_signature(member.module) != first:
            raise UserError(
                f"ensemble members differ in their {kind.ensemble_shares}: {member.path} does not match "
                f"{members[0].path} ({kind.ensemble_signature(member.module)} vs {first}); an ensemble needs "
                "models of the same task"
            )
    return members, kind


def combine(members: list[Member], kind: TaskKind, tta: str = "none") -> Any:
    """The first member's module with its network replaced by the members' average under TTA ``tta``."""
    modules = [m.module for m in members]
    if len(modules) == 1 and transforms_of(tta) == [0]:
        return modules[0].eval()
    outputs = require_outputs(kind, "ensembles and tta=..." if len(modules) > 1 else "tta=...")
    return wrap_tta(average_into(modules, outputs), tta, outputs).eval()
