"""Write files so that a reader never sees a half-written one: temp file in the same folder, fsync, rename.

The temp file lives beside the target (never in ``$TMPDIR``, which may be another file system: a rename
across file systems is a copy that a crash can leave truncated). Its name starts with a dot and contains
``.partial``, so a file killed half-way never looks like a finished one; :func:`remove_stale_partials` clears
such leftovers. The finished file gets the permissions the user's umask gives new files (0644 with umask 022).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTIAL_MARK = ".partial"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_path(target: Path) -> Path:
    """A fresh, unique temp path beside ``target`` for writing it (``.<name>.<random>.partial<suffix>``)."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f"{PARTIAL_MARK}{target.suffix}", dir=target.parent
    )
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike[str], writer: Callable[[str], Any]) -> Path:
    """Create ``path`` atomically: ``writer(tmp_path)`` fills a temp file that is then renamed into place.

    The temp file keeps the target's suffix (image writers pick the format from it) and is flushed to disk
    before the rename. If ``writer`` raises (or the process is interrupted), the temp file is removed and
    ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    try:
        writer(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_link(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Make ``path`` a second name of the finished file ``source``, atomically: a reader sees the old ``path``
    or the new one, never a partial file.

    A hard link (no data written) is renamed into place; where the file system has no hard links, a copy
    is written with :func:`atomic_write`. ``source`` must never be changed in place afterwards (every writer
    here replaces files by renaming, which leaves the other name untouched).
    """
    target = Path(path)
    tmp = partial_path(target)
    try:
        tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        return atomic_write(target, lambda name: shutil.copyfile(source, name))
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files that a killed writer left in ``folder``; return what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    stale = [p for p in root.glob(f".*{PARTIAL_MARK}*") if p.is_file()]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale
