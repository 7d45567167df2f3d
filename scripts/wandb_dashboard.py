"""Build a saved W&B workspace for a project or one sweep.

    python scripts/wandb_dashboard.py project=imagelab [group=train-2026-01-01_12-00-00_a1b2c3] [options]

Options (key=value): ``entity`` (default: your W&B default entity), ``group`` (a sweep's W&B group: the runs
are filtered on it and its swept parameters are read from ``outputs/<task>/multiruns/<time>_<id>``), ``outputs``
(where to look for that folder, default ``outputs``), ``metric``/``mode`` (objective; default: the sweep's),
``params`` (comma-separated config keys, when the sweep folder is not on this machine), ``name`` (the
workspace's name), ``wandb`` (auto | online | offline; auto = online when logged in), ``output`` (the
spec file written offline, default ``outputs/dashboards/<name>.json``), ``spec`` (save a spec file written
offline earlier, instead of building one).

Online the workspace is saved to W&B and its URL printed. Offline the workspace spec is written to a JSON
file; save it later with ``python scripts/wandb_dashboard.py spec=FILE [entity=...]`` once logged in.
What each panel answers: docs/wandb.md.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

KEYS = {
    "project",
    "entity",
    "group",
    "outputs",
    "metric",
    "mode",
    "params",
    "name",
    "wandb",
    "output",
    "spec",
}


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments as a dict; unknown keys or malformed arguments raise UserError."""
    from imagelab.core.errors import UserError

    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise UserError(
                f"unknown argument {item!r}; use key=value with key one of {', '.join(sorted(KEYS))}"
            )
        args[key] = value
    return args


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "workspace"


def main(argv: list[str]) -> int:
    """Build (or load) the workspace; save it online, or write its spec file offline. Returns the exit code."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from imagelab.core.atomic import atomic_write_json
    from imagelab.core.errors import UserError
    from imagelab.tasks.dashboard import (
        build_workspace,
        plan_dashboard,
        workspace_from_spec,
        workspace_spec,
    )
    from imagelab.tracking.wandb_mode import resolve_wandb_mode

    try:
        args = parse_args(argv)
        mode = resolve_wandb_mode(args.get("wandb", "auto"))
        if args.get("spec"):
            path = Path(args["spec"])
            if not path.is_file():
                raise UserError(f"spec={path} does not exist")
            stored = json.loads(path.read_text())
            workspace = workspace_from_spec(stored.get("workspace", stored), args.get("entity"))
        else:
            plan = plan_dashboard(args)
            workspace = build_workspace(plan)
        if mode == "online":
            if not workspace.entity:
                import wandb

                workspace.entity = wandb.Api().default_entity or ""
            workspace.save()
            print(f"workspace saved: {workspace.url}")
            return 0
        if args.get("spec"):
            raise UserError("saving a spec needs W&B online: log in (wandb login) and run again")
        output = Path(
            args.get("output")
            or Path(args.get("outputs", "outputs")) / "dashboards" / f"{_safe_name(workspace.name)}.json"
        )
        record = {
            "project": workspace.project,
            "group": plan.group,
            "metric": plan.metric,
            "mode": plan.mode,
            "params": plan.params,
            "workspace": workspace_spec(workspace),
        }
        atomic_write_json(output, record)
        print(f"W&B is offline: workspace spec written to {output}")
        print(
            f"save it once logged in:  python scripts/wandb_dashboard.py spec={output} [entity=YOUR_ENTITY]"
        )
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
