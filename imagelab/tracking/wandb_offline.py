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

from wandb.proto import wandb_internal_pb2

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


def _summary_ops(metric: Any) -> list[str]:
    return [
        op for op in ("min", "max", "mean", "last", "first", "none") if getattr(metric.summary, op, False)
    ]


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Return what an offline run holds, as plain Python values.

    Keys: ``run`` (id, name, project, group, job_type, tags, notes; ``exit_code`` once the run was closed,
    ``preempting: True`` when it was marked so), ``config`` (values unwrapped from
    W&B's ``{"value": ...}`` envelope), ``history`` (one dict per logged row), ``summary``, ``metrics``
    (``define_metric`` declarations: name or glob -> ``step_metric``, ``summary`` aggregations, ``hidden``),
    ``files`` (paths saved into the run), ``artifacts`` (name, type, aliases, ``entries``: path -> local
    file), ``tables`` (every logged W&B Table by key: ``columns`` and ``data`` rows; image cells are dicts
    naming the image file when the run's table artifact is still on disk, else the string ``"Image"``) and
    ``charts`` (custom charts such as ``wandb.plot.confusion_matrix``: key -> preset id and table key).
    ``run_dir`` is the ``offline-run-*`` folder or the ``.wandb`` file itself.
    """
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
    metrics: dict[str, dict[str, Any]] = {}
    saved: list[str] = []
    artifacts: list[dict[str, Any]] = []
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
        elif kind == "metric":
            m = record.metric
            metrics[m.name or m.glob_name] = {
                "step_metric": m.step_metric or None,
                "summary": _summary_ops(m),
                "hidden": bool(m.options.hidden),
            }
        elif kind == "files":
            saved += [f.path for f in record.files.files]
        elif kind == "artifact":
            a = record.artifact
            entries = {e.path: e.local_path for e in a.manifest.contents}
            artifacts.append({"name": a.name, "type": a.type, "aliases": list(a.aliases), "entries": entries})
    config = {k: v.get("value", v) if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
    wandb_internal = config.pop("_wandb", None) or {}
    charts = _read_charts(config, wandb_internal)
    config = {k: v for k, v in config.items() if not k.startswith("_wandb/")}
    files_dir = path.parent / "files"
    return {
        "run": run,
        "config": config,
        "history": history,
        "summary": summary,
        "metrics": metrics,
        "files": saved,
        "artifacts": artifacts,
        "tables": _read_tables(history, artifacts, files_dir),
        "charts": charts,
    }


def _read_tables(
    history: list[dict[str, Any]], artifacts: list[dict[str, Any]], files_dir: Path
) -> dict[str, dict[str, Any]]:
    """The last version of every table logged in ``history``."""
    tables: dict[str, dict[str, Any]] = {}
    staged = {p: local for a in artifacts if a["type"] == "run_table" for p, local in a["entries"].items()}
    for row in history:
        for key, value in row.items():
            if not key.endswith("/_type") or value != "table-file":
                continue
            name = key[: -len("/_type")]
            source = staged.get(f"{name}.table.json")
            if not (source and Path(source).is_file()):
                source = files_dir / row.get(f"{name}/path", "")
            if Path(source).is_file():
                data = json.loads(Path(source).read_text())
                tables[name] = {"columns": data.get("columns", []), "data": data.get("data", [])}
    return tables


def _table_key(query: Any) -> str | None:
    """The ``tableKey`` argument somewhere inside a custom chart's user query."""
    if isinstance(query, dict):
        if query.get("name") == "tableKey":
            return query.get("value")
        query = list(query.values())
    if isinstance(query, list):
        for item in query:
            found = _table_key(item)
            if found:
                return found
    return None


def _read_charts(config: dict[str, Any], wandb_internal: Any) -> dict[str, dict[str, Any]]:
    """Custom charts (``_wandb.visualize`` in the config): key -> ``preset`` (e.g. the confusion matrix's
    ``wandb/confusion_matrix/v1``), ``table`` (the table key holding its data) and ``fields``."""
    specs: dict[str, Any] = {}
    if isinstance(wandb_internal, dict):
        specs.update(wandb_internal.get("visualize", {}) or {})
    prefix = "_wandb/visualize/"
    specs.update({k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)})
    charts: dict[str, dict[str, Any]] = {}
    for key, spec in specs.items():
        panel = spec.get("panel_config", {}) if isinstance(spec, dict) else {}
        charts[key] = {
            "preset": panel.get("panelDefId"),
            "table": _table_key(panel.get("userQuery")),
            "fields": panel.get("fieldSettings", {}),
        }
    return charts


def find_offline_runs(root: str | Path) -> list[Path]:
    """All ``offline-run-*`` folders below ``root``, sorted by path."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())
