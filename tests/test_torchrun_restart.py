"""Which torchrun workers are restarts: the run folder's mark of the torchrun job id (the whole path, two
torchrun "nodes" with a killed rank: tests/test_cluster_torchrun.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagelab.core.torchrun_restart import RUN_MARK, torchrun_restarted


@pytest.fixture
def torchrun_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment torchrun gives the workers of job ``job-a`` started with ``--max-restarts=1``."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")


@pytest.mark.usefixtures("torchrun_job")
def test_the_first_start_marks_the_folder_and_a_restart_finds_the_mark(tmp_path: Path) -> None:
    assert not torchrun_restarted(tmp_path, rank=1)  # rank 1 before rank 0 marked: a first start
    assert not torchrun_restarted(tmp_path, rank=0)
    assert (tmp_path / RUN_MARK).read_text() == "job-a"
    assert torchrun_restarted(tmp_path, rank=0) and torchrun_restarted(tmp_path, rank=1)  # the restart


@pytest.mark.usefixtures("torchrun_job")
def test_another_torchrun_job_in_the_folder_is_not_a_restart(tmp_path: Path) -> None:
    (tmp_path / RUN_MARK).write_text("job-b")
    assert not torchrun_restarted(tmp_path, rank=1)


def test_without_restarts_or_torchrun_nothing_is_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not torchrun_restarted(tmp_path, rank=0)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert not torchrun_restarted(tmp_path, rank=0)
    assert not (tmp_path / RUN_MARK).exists()
