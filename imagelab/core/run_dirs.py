"""Run directories that never collide, and finding the run to resume (``resume=<dir>`` or ``resume=last``).

``${unique_dir:PARENT}`` (:mod:`imagelab.resolvers`) names a
new folder ``<time>_<random>`` below PARENT and creates it with ``os.mkdir``, which fails if the name exists,
so two runs started in the same second (a shell loop, two terminals, a job array) never share a folder.
Light imports only: this runs before Hydra composes, also for ``--help`` and ``--cfg job``.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from imagelab.core.errors import UserError

TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def claim_unique_dir(parent: str | os.PathLike[str]) -> str:
    """Create and return a new folder ``PARENT/<YYYY-mm-dd_HH-MM-SS>_<6 hex>`` that no other process has.

    ``~`` in PARENT (``paths.log_dir="~/runs"``) is the user's home folder.
    """
    root = Path(parent).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        candidate = root / f"{time.strftime(TIME_FORMAT)}_{secrets.token_hex(3)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise UserError(f"could not create a new run folder below {root}: check that it is writable")


def newest_run_dir(runs_root: Path) -> Path:
    """The most recently started run folder below ``runs_root`` (``outputs/<task>/runs``)."""
    runs = (
        [p for p in runs_root.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
        if runs_root.is_dir()
        else []
    )
    if not runs:
        raise UserError(f"resume=last: no runs in {runs_root}; pass resume=<run directory> instead")
    return max(runs, key=lambda p: (p.name[: len(TIME_FORMAT) + 2], (p / ".hydra").stat().st_mtime))


def resolve_resume_dir(value: str, runs_root: Path) -> Path:
    """The run folder that ``resume=VALUE`` names; checks that it holds a config and a ``last.ckpt``."""
    run_dir = newest_run_dir(runs_root) if value == "last" else Path(value).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"resume={value}: {run_dir} is not a directory; pass a run folder from {runs_root}")
    if not (run_dir / ".hydra" / "overrides.yaml").is_file():
        raise UserError(f"resume={value}: {run_dir} has no .hydra/overrides.yaml; it is not a run folder")
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise UserError(
            f"resume={value}: {run_dir / 'checkpoints' / 'last.ckpt'} does not exist (the run saved no "
            "checkpoint yet); start a new run instead"
        )
    return run_dir.resolve()
