"""``python scripts/train.py resume=<run dir>|last [key=value ...]``: continue a run in its own folder.

Before Hydra starts, :func:`resume_argv` turns the command line into the run's own overrides (as recorded in
its ``.hydra/``) followed by the new ones, with ``hydra.run.dir`` set to the run folder and Hydra's record of
this resumption written to ``.hydra/resume-<time>/`` (the original ``.hydra/`` stays as it was). The train
task then continues from ``checkpoints/last.ckpt`` and logs to the same W&B run id (:func:`resume_point`).
A SLURM job that was requeued into its folder goes through :func:`resume_point` too.

A resumption that fails before its first training step (e.g. a checkpoint that does not fit the changed
model: :func:`state_dict_mismatch` turns PyTorch's error into one line) leaves the folder as it found it
(:func:`set_aside_failed_resume`), so a later ``resume=`` replays only the run's own overrides.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imagelab.core.atomic import atomic_write_text
from imagelab.core.constants import HYDRA_DIR, METRICS_FILE
from imagelab.core.errors import UserError
from imagelab.core.run_dirs import resolve_resume_dir

RESUME_KEY = "resume"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _argv_value(args: list[str], key: str) -> str | None:
    for arg in reversed(args):
        if "=" in arg and _override_key(arg) == key:
            return arg.split("=", 1)[1]
    return None


def _runs_root(args: list[str]) -> Path:
    log_dir = _argv_value(args, "paths.log_dir")
    if log_dir is None:
        log_dir = str(Path(_argv_value(args, "paths.root_dir") or os.getcwd()) / "outputs")
    return Path(log_dir).expanduser() / (_argv_value(args, "task_name") or "train") / "runs"


def _recorded_overrides(run_dir: Path) -> list[str]:
    """The overrides the run was last started with: its newest resumption's, else the original ones."""
    hydra_dir = run_dir / HYDRA_DIR
    resumes = sorted(hydra_dir.glob("resume-*/overrides.yaml"))
    source = resumes[-1] if resumes else hydra_dir / "overrides.yaml"
    overrides = yaml.safe_load(source.read_text()) or []
    return [o for o in overrides if _override_key(o) != RESUME_KEY]


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` with ``resume=...`` expanded into the run's overrides plus the new ones (else unchanged)."""
    args = argv[1:]
    value = _argv_value(args, RESUME_KEY)
    if value in (None, "", "null", "None"):
        return argv
    if any(a in ("-m", "--multirun") for a in args):
        raise UserError("resume= continues one run; it cannot be combined with -m (a sweep)")
    if any("=" in a and _override_key(a) == "hydra.run.dir" for a in args):
        return argv  # a DDP rank of a resumed run: its command line is complete already
    run_dir = resolve_resume_dir(value, _runs_root(args))
    flags = [a for a in args if "=" not in a or a.startswith("-")]
    new = [a for a in args if "=" in a and not a.startswith("-") and _override_key(a) != RESUME_KEY]
    new_keys = {_override_key(a) for a in new}
    replayed = [o for o in _recorded_overrides(run_dir) if _override_key(o) not in new_keys]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return [
        argv[0],
        *flags,
        *replayed,
        *new,
        f'{RESUME_KEY}="{run_dir}"',
        f'hydra.run.dir="{run_dir}"',
        f"hydra.output_subdir={HYDRA_DIR}/resume-{stamp}",
    ]


@dataclass
class ResumePoint:
    """Where a continued run picks up: its full-state checkpoint and the W&B run id to log to."""

    checkpoint: Path
    wandb_id: str | None


def _wandb_id(run_dir: Path) -> str | None:
    """The W&B run id a run logged to: from its metrics.json, else from its newest ``wandb/*run-*`` folder."""
    try:
        record: Any = json.loads((run_dir / METRICS_FILE).read_text())
        run_id = (record.get("wandb") or {}).get("id")
        if run_id:
            return str(run_id)
    except (OSError, ValueError, AttributeError):
        pass
    folders = sorted((run_dir / "wandb").glob("*run-*-*")) if (run_dir / "wandb").is_dir() else []
    folders = [f for f in folders if f.is_dir()]
    return folders[-1].name.rsplit("-", 1)[-1] if folders else None


def resume_point(resume: str | None, output_dir: Path, requeued: bool = False) -> ResumePoint | None:
    """The checkpoint and W&B id to continue from: for ``resume=<dir>``, or a requeued SLURM job's own folder."""
    if resume:
        run_dir = Path(resume)
        if run_dir.resolve() != output_dir.resolve():
            raise UserError(f"resume={resume} but this run writes to {output_dir}: use resume= on its own")
    elif requeued and (output_dir / LAST_CHECKPOINT).is_file():
        run_dir = output_dir
    else:
        return None
    checkpoint = run_dir / LAST_CHECKPOINT
    if not checkpoint.is_file():
        raise UserError(f"cannot resume: {checkpoint} does not exist")
    return ResumePoint(checkpoint=checkpoint, wandb_id=_wandb_id(run_dir))


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)
_KEY_LIST = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]+\"(?:, )?)+)")
SHOWN_KEYS = 4  # mismatched keys named in the one-line error; the rest are counted


def state_dict_mismatch(exc: BaseException) -> UserError | None:
    """A one-line UserError naming the mismatched keys when ``exc`` (or its cause) is PyTorch's "Error(s) in
    loading state_dict" (a checkpoint of another network shape), else None."""
    current: BaseException | None = exc
    for _ in range(20):
        if current is None:
            return None
        text = str(current)
        if isinstance(current, RuntimeError) and text.startswith("Error(s) in loading state_dict"):
            break
        current = current.__cause__ or current.__context__
    else:
        return None
    problems = [
        f"{key} {ckpt} in the checkpoint, {model} in the model"
        for key, ckpt, model in _SIZE_MISMATCH.findall(text)
    ]
    for kind, keys in _KEY_LIST.findall(text):
        where = "missing from the checkpoint" if kind == "Missing" else "not in the model"
        problems += [f"{key} {where}" for key in re.findall(r"\"([^\"]+)\"", keys)]
    shown = "; ".join(problems[:SHOWN_KEYS]) + (
        f"; and {len(problems) - SHOWN_KEYS} more" if len(problems) > SHOWN_KEYS else ""
    )
    return UserError(
        f"the checkpoint does not fit the configured model ({shown}): use the model settings it was trained "
        "with (a resume replays the run's own; drop the model overrides given with it)"
    )


FAILED_RESUME_PREFIX = "failed-"  # .hydra/failed-resume-<time>/: a resumption that failed before training


def set_aside_failed_resume(output_dir: Path, output_subdir: str | None, previous_record: str | None) -> None:
    """Leave a run folder as it was before a resumption that failed before its first training step.

    The attempt's Hydra record ``.hydra/resume-<time>/`` becomes ``.hydra/failed-resume-<time>/`` (kept for
    reference; :func:`resume_argv` replays only ``resume-*``), and ``metrics.json`` gets its previous content
    back (status and W&B run id of the run itself), so the next ``resume=`` starts from the same state.
    """
    if output_subdir:
        attempt = output_dir / output_subdir
        if attempt.is_dir() and attempt.parent.name == HYDRA_DIR and attempt.name.startswith("resume-"):
            attempt.rename(attempt.with_name(FAILED_RESUME_PREFIX + attempt.name))
    if previous_record is not None:
        atomic_write_text(output_dir / METRICS_FILE, previous_record)
