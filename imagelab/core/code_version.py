"""Which code a run ran: git commit, whether the tree was dirty, and the uncommitted diff saved beside the run."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from imagelab.core.atomic import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DIFF_FILE = "code.diff"


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _describe() -> tuple[dict[str, Any], str]:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "note": f"{PROJECT_ROOT} is not a git checkout"}, ""
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    diff = (_git("diff", "HEAD", "--binary") or "") if status.strip() else ""
    return {"commit": commit.strip(), "dirty": bool(status.strip())}, diff


def record_code_version(run_dir: Path | None) -> dict[str, Any]:
    """The project's git commit and dirty flag; a dirty tree's diff is written to ``<run_dir>/code.diff``."""
    info, diff = _describe()
    info = dict(info)
    if diff and run_dir is not None:
        atomic_write_text(run_dir / DIFF_FILE, diff)
        info["diff_file"] = str(run_dir / DIFF_FILE)
    return info
