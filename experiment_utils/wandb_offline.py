"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) back into Python dicts.

wandb >= 0.20 no longer ships a Python reader for its run files. The file is a LevelDB-style log: a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC32, length, type: full/first/middle/last) carrying serialized ``wandb_internal_pb2.Record`` messages.
Used by the tests to check what was logged, and by anyone who wants to inspect a run without syncing it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK_SIZE = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_record_bytes(path: str | Path) -> list[bytes]:
    """Split a ``.wandb`` file into the serialized records it holds."""
    data = Path(path).read_bytes()
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(
            f"{path} is not a W&B run file (header {ident!r}, magic {magic:#x}, version {version})"
        )
    records: list[bytes] = []
    pending = b""
    pos = _FILE_HEADER.size
    while pos + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK_SIZE - pos % _BLOCK_SIZE
        if room < _CHUNK_HEADER.size:  # block trailer padding
            pos += room
            continue
        _checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        start = pos + _CHUNK_HEADER.size
        chunk = data[start : start + length]
        pos = start + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK_SIZE - pos % _BLOCK_SIZE if pos % _BLOCK_SIZE else 0
            continue
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
            pending = b""
    return records


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Return ``{"run": {...}, "config": {...}, "history": [...], "summary": {...}}`` of an offline run.

    ``run`` also holds ``exit_code`` once the run was closed, and ``preempting: True`` when it was marked so.
    ``run_dir`` is the ``offline-run-*`` folder or the ``.wandb`` file itself. Config values are unwrapped
    from W&B's ``{"value": ...}`` envelope; history rows are dicts of the logged keys.
    """
    from wandb.proto import wandb_internal_pb2

    path = Path(run_dir)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"no run-*.wandb file in {path}")
        path = files[0]
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for raw in iter_record_bytes(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = {
                "id": r.run_id,
                "name": r.display_name,
                "project": r.project,
                "group": r.run_group,
                "job_type": r.job_type,
                "tags": list(r.tags),
                "notes": r.notes,
            }
            for item in r.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({_item_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[_item_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "preempting":
            run["preempting"] = True
    config = {k: v.get("value", v) if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
    config.pop("_wandb", None)
    return {"run": run, "config": config, "history": history, "summary": summary}


def find_offline_runs(root: str | Path) -> list[Path]:
    """All ``offline-run-*`` folders below ``root``, sorted by path."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())
