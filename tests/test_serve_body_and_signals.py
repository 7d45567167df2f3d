"""``scripts/serve.py``: the image as the raw request body, and a bounded stop on SIGTERM / SIGINT.

A tiny denoiser is trained once; a server on it answers raw ``image/*`` bodies (POST and PUT) like multipart
uploads, with the same limits and errors. Then SIGTERM (and, on a second server, SIGINT) is sent to the main
process only, as ``docker stop``, systemd and Kubernetes do: it must exit within 10 s with one line, and
leave none of its LitServe processes behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.overrides import TINY_DENOISE as TINY
from tests.helpers.paths import SCRIPTS
from tests.helpers.runs import run_script
from tests.helpers.serving import wait_until_healthy

pytestmark = pytest.mark.slow  # trains a tiny denoiser and starts three servers (about 2 min on 2 cores)

STOP_LIMIT_S = 10.0


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``scripts/serve.py`` in the background, in its own session (so that cleanup can reach every process)."""

    def __init__(self, cwd: Path, ckpt: str, *overrides: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve_{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPTS / "serve.py"),
                    f"ckpt_path={ckpt}",
                    f"port={self.port}",
                    *overrides,
                ],
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Poll /health until it answers 200; fail with the server's log otherwise."""
        wait_until_healthy(self.url, self.proc, self.log, timeout)

    def cleanup(self) -> None:
        """SIGKILL whatever is left of the server's session (after a test that failed)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("serve_train")
    run_script("train.py", *TINY, cwd=root)
    (run,) = (root / "outputs" / "train" / "runs").iterdir()
    return str(run / "checkpoints" / "best.ckpt")


@pytest.fixture
def server(ckpt: str, tmp_path: Path) -> Iterator[ServeProcess]:
    started = ServeProcess(tmp_path, ckpt, "max_upload_mb=0.2", "max_pixels=20000")
    try:
        started.wait_ready()
        yield started
    finally:
        started.cleanup()


def _stop_with(server: ServeProcess, signum: int) -> tuple[float, str, list[int]]:
    """Send ``signum`` to the main process only; (seconds until it exited, its output, processes left)."""
    import psutil

    children = [p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)]
    assert children, "LitServe starts worker processes"
    started = time.monotonic()
    os.kill(server.proc.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(STOP_LIMIT_S + 20)
    took = time.monotonic() - started
    time.sleep(0.5)
    left = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    return took, server.log.read_text(), left


def test_a_raw_image_body_is_served_like_a_multipart_upload(server: ServeProcess) -> None:
    import httpx

    url = f"{server.url}/predict"
    image = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    body = _png(image)
    multipart = httpx.post(url, files={"file": ("x.png", body)}, timeout=60)
    assert multipart.status_code == 200, multipart.text
    raw_answers = [
        httpx.post(
            url, content=body, headers={"content-type": "image/png"}, timeout=60
        ),  # curl --data-binary
        httpx.put(url, content=body, timeout=60),  # curl -T x.png
        httpx.post(url, content=body, timeout=60),  # requests.post(url, data=...): no content type
    ]
    for answer in raw_answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        assert answer.content == multipart.content

    refused = {
        415: httpx.post(url, content=b"hello", headers={"content-type": "image/png"}, timeout=60),
        413: httpx.post(
            url, content=b"II*\x00" + bytes(300_000), headers={"content-type": "image/tiff"}, timeout=60
        ),
        400: httpx.post(url, content=b"", headers={"content-type": "image/png"}, timeout=60),
    }
    for status, answer in refused.items():
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]
    too_many_pixels = httpx.post(url, content=_png(np.zeros((200, 200), np.uint8)), timeout=60)
    assert too_many_pixels.status_code == 413  # 40,000 > max_pixels=20,000, as for an upload
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_to_the_main_process_stops_the_server_in_bounded_time(
    server: ServeProcess, signum: int, exit_code: int
) -> None:
    took, output, left = _stop_with(server, signum)
    assert server.proc.returncode == exit_code, output[-3000:]
    assert took < STOP_LIMIT_S, f"took {took:.1f} s"
    assert not left, f"processes left behind: {left}"
    name = signal.Signals(signum).name
    lines = [line for line in output.splitlines() if name in line]
    assert lines == [f"interrupted: interrupted by {name} (the server stopped)"], output[-3000:]
    assert "Traceback" not in output
