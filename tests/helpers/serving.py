"""Waiting for a ``scripts/serve.py`` process the tests started to answer on its health route."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Poll ``url``/health until it answers 200; fail with the server's log when it exits or time runs out."""
    import httpx  # the deploy extra's client, imported only by the serving tests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server not ready:\n{log.read_text()[-3000:]}")
