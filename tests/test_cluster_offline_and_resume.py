"""Compute nodes without internet and resumes that go wrong: W&B falls back to offline, a changed network is
one line, and a failed resume leaves the run folder resumable."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from imagelab.tasks.resume import state_dict_mismatch
from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.runs import assert_one_line_error, run_script, single_run_dir

TINY = [
    *FAST_DENOISE,
    "trainer.max_epochs=1",
    "data.patches_per_epoch=64",
    "data.eval_crop=32",
    "model.net.depth=3",
    "model.net.width=8",
    "model.num_panels=0",
    "print_config=false",
]
FALLBACK_WAIT_S = 3


def _closed_port() -> int:
    """A loopback port nothing listens on (W&B's server 'out of reach': connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_state_dict_mismatch_names_the_keys_in_one_line() -> None:
    model, checkpoint = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(checkpoint.state_dict())
    error = state_dict_mismatch(caught.value)
    assert error is not None and "\n" not in str(error)
    assert "weight [4, 2] in the checkpoint, [3, 2] in the model" in str(error)
    assert "bias [4] in the checkpoint, [3] in the model" in str(error)
    with pytest.raises(RuntimeError) as caught:
        torch.nn.Sequential(model).load_state_dict(model.state_dict())
    assert "0.weight missing from the checkpoint" in str(state_dict_mismatch(caught.value))
    assert state_dict_mismatch(RuntimeError("CUDA out of memory")) is None


@pytest.fixture(params=["own", "inherited"])
def wandb_service(request: pytest.FixtureRequest) -> Iterator[None]:
    """The script starts its own W&B service, or inherits one (``WANDB_SERVICE``) from a parent process that
    uses W&B, as a process launched by another W&B process does."""
    if request.param == "own":
        yield
        return
    import wandb

    wandb.setup()
    assert os.environ.get(wandb.env.SERVICE)
    try:
        yield
    finally:
        wandb.teardown()


@pytest.mark.slow
def test_unreachable_wandb_server_falls_back_to_an_offline_run_with_a_stable_id(
    tmp_path: Path, wandb_service: None
) -> None:
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "0" * 40,
        "WANDB_BASE_URL": f"http://127.0.0.1:{_closed_port()}",
    }
    proc = run_script(
        "train.py", *TINY, f"logger.wandb.settings.init_timeout={FALLBACK_WAIT_S}", cwd=tmp_path, env=env
    )
    record = json.loads((single_run_dir(tmp_path) / "metrics.json").read_text())
    assert record["status"] == "completed" and record["metrics"]["val/psnr"] > 0
    wandb_info = record["wandb"]
    assert wandb_info["mode"] == "offline" and "CommError" in wandb_info["offline_fallback"]
    lines = [line for line in proc.stderr.splitlines() if "W&B server not reachable" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"within {FALLBACK_WAIT_S} s" in lines[0]
    assert lines[0].endswith(f"wandb sync {wandb_info['run_dir']}")
    # the id the run was started with online is the one the offline run (and a later sync) uses
    assert re.search(rf"as run {wandb_info['id']},", lines[0])
    assert Path(wandb_info["run_dir"]).name.endswith(f"-{wandb_info['id']}")
    assert [p.name for p in (single_run_dir(tmp_path) / "wandb").glob("*run-*")] == [
        Path(wandb_info["run_dir"]).name
    ]  # no leftover folder of the online attempt


@pytest.mark.slow
def test_a_resume_with_a_changed_network_is_one_line_and_leaves_the_folder_resumable(tmp_path: Path) -> None:
    run_script("train.py", *TINY, "test=false", cwd=tmp_path)
    run_dir = single_run_dir(tmp_path)
    before = (run_dir / "metrics.json").read_text()

    refused = run_script("train.py", f"resume={run_dir}", "model.net.width=12", cwd=tmp_path, check=False)
    assert_one_line_error(refused, "does not fit the configured model", "net.body.0.weight [8, 1, 3, 3]")
    assert (run_dir / "metrics.json").read_text() == before  # the run's own record, W&B id included
    assert [p.name.startswith("failed-resume-") for p in (run_dir / ".hydra").glob("*resume-*")] == [True]

    resumed = run_script("train.py", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert not [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["status"] == "completed"
    assert final["wandb"]["id"] == json.loads(before)["wandb"]["id"]
    [replayed] = (run_dir / ".hydra").glob("resume-*/overrides.yaml")
    assert "model.net.width=8" in replayed.read_text() and "width=12" not in replayed.read_text()
