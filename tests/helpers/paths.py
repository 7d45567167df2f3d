"""Where the repository's parts are, for tests that start scripts or compose configs."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
SCRIPTS = REPO_ROOT / "scripts"
