"""``resume=<dir>|last`` command lines and resume points, without training (the real resume is in test_run_faults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from imagelab.core.errors import UserError
from imagelab.tasks.resume import resume_argv, resume_point


def make_run(root: Path, name: str, overrides: list[str], wandb_id: str | None = None) -> Path:
    run = root / "outputs" / "train" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    if wandb_id:
        (run / "wandb" / f"offline-run-20260101_000000-{wandb_id}").mkdir(parents=True)
    return run


def test_resume_replays_the_runs_overrides_then_the_new_ones(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, "2026-01-01_00-00-00_aaaaaa", ["model.net.width=8", "trainer.max_epochs=2"])
    argv = resume_argv(["train.py", f"resume={run}", "trainer.max_epochs=5"])
    assert argv[1:3] == ["model.net.width=8", "trainer.max_epochs=5"]  # the new value replaces the old one
    assert f'hydra.run.dir="{run}"' in argv and f'resume="{run}"' in argv
    assert any(a.startswith("hydra.output_subdir=.hydra/resume-") for a in argv)


def test_resume_last_takes_the_newest_run_and_later_resumptions_replay_the_latest_overrides(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path, "2026-01-01_00-00-00_aaaaaa", ["seed=1"])
    newest = make_run(tmp_path, "2026-01-02_00-00-00_bbbbbb", ["seed=2"])
    resumed = newest / ".hydra" / "resume-2026-01-03_00-00-00"
    resumed.mkdir()
    (resumed / "overrides.yaml").write_text(
        yaml.safe_dump(["seed=2", "trainer.max_epochs=9", f"resume={newest}"])
    )
    argv = resume_argv(["train.py", "resume=last"])
    assert argv[1:3] == ["seed=2", "trainer.max_epochs=9"] and f'hydra.run.dir="{newest}"' in argv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resume=last"], "no runs in"),
        (["resume=/no/such/run"], "is not a directory"),
        (["-m", "resume=last"], "cannot be combined with -m"),
    ],
)
def test_bad_resume_requests_are_user_errors(
    args: list[str], message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        resume_argv(["train.py", *args])


def test_a_run_without_last_checkpoint_cannot_be_resumed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, "2026-01-01_00-00-00_aaaaaa", [])
    (run / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(UserError, match=r"last\.ckpt does not exist"):
        resume_argv(["train.py", f"resume={run}"])


def test_resume_point_of_a_requeued_job_uses_its_own_folder_and_wandb_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "job", [], wandb_id="abc123")
    assert resume_point(None, run, requeued=False) is None  # a first start trains from scratch
    point = resume_point(None, run, requeued=True)
    assert point is not None and point.checkpoint == run / "checkpoints" / "last.ckpt"
    assert point.wandb_id == "abc123"
    (run / "metrics.json").write_text(json.dumps({"wandb": {"id": "fromrecord"}}))
    assert resume_point(str(run), run).wandb_id == "fromrecord"
    with pytest.raises(UserError, match="writes to"):
        resume_point(str(run), tmp_path / "elsewhere")
