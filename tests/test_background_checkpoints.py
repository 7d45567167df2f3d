"""Checkpoints written on a background thread: the state of the moment of the save, in order, errors not lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from imagelab.core.checkpoint_io import AtomicCheckpointIO, uploads_checkpoints
from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import FAST_DENOISE


class SlowDiskCheckpointIO(AtomicCheckpointIO):
    """Background checkpoint writes that start only once ``disk_ready`` is set (a slow or busy disk)."""

    def __init__(self) -> None:
        super().__init__(background=True)
        self.disk_ready = threading.Event()

    def serialize(self, checkpoint: dict, path: str) -> None:
        assert self.disk_ready.wait(30)
        super().serialize(checkpoint, path)


def test_a_background_save_holds_the_state_of_the_moment_of_the_save(tmp_path: Path) -> None:
    io = SlowDiskCheckpointIO()
    weights = torch.arange(6.0)
    io.save_checkpoint({"state_dict": {"w": weights}, "epoch": 3}, tmp_path / "last.ckpt")
    weights.mul_(-1)  # the next optimiser step changes the weights in place while the file is not written yet
    io.disk_ready.set()
    io.wait()
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert torch.equal(saved["state_dict"]["w"], torch.arange(6.0))
    assert saved["epoch"] == 3


def test_a_save_waits_for_the_previous_write_so_one_copy_at_most_is_held(tmp_path: Path) -> None:
    io = SlowDiskCheckpointIO()
    io.save_checkpoint({"w": torch.ones(2)}, tmp_path / "a.ckpt")
    second = threading.Thread(target=io.save_checkpoint, args=({"w": torch.zeros(2)}, tmp_path / "b.ckpt"))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # blocked behind the first write
    io.disk_ready.set()
    second.join(30)
    assert not second.is_alive()
    io.teardown()
    assert torch.equal(torch.load(tmp_path / "b.ckpt", weights_only=True)["w"], torch.zeros(2))


def test_links_removals_and_loads_come_after_the_writes_queued_before_them(tmp_path: Path) -> None:
    io = SlowDiskCheckpointIO()
    old = tmp_path / "epoch=0.ckpt"
    old.write_bytes(b"an older top-k file")
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "best.ckpt")
    io.link_checkpoint(str(tmp_path / "best.ckpt"), str(tmp_path / "last.ckpt"))
    io.remove_checkpoint(old)
    assert not (tmp_path / "best.ckpt").exists()  # still queued
    assert old.exists()
    io.disk_ready.set()
    loaded = io.load_checkpoint(tmp_path / "last.ckpt", weights_only=True)  # waits for the queue
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert (tmp_path / "last.ckpt").stat().st_ino == (tmp_path / "best.ckpt").stat().st_ino
    assert not old.exists()
    io.teardown()


def test_a_failed_background_write_is_raised_at_the_next_save(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO(background=True)

    def full_disk(obj: object, path: str) -> None:
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(torch, "save", full_disk)
    io.save_checkpoint({"w": torch.ones(1)}, tmp_path / "a.ckpt")  # returns at once
    io._writes._pending[0].exception()  # let that write fail
    with pytest.raises(OSError, match="No space left on device"):
        io.save_checkpoint({"w": torch.ones(1)}, tmp_path / "b.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_foreground_saves_are_written_before_save_returns(tmp_path: Path) -> None:
    io = AtomicCheckpointIO(background=False)
    weights = torch.ones(3)
    io.save_checkpoint({"w": weights}, tmp_path / "last.ckpt")
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], weights)
    assert io._writes._executor is None  # no thread was started


def test_loggers_that_upload_checkpoints_are_recognised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    csv = CSVLogger(tmp_path)
    assert not uploads_checkpoints([csv, WandbLogger(save_dir=str(tmp_path), log_model=False)])
    assert uploads_checkpoints([csv, WandbLogger(save_dir=str(tmp_path), log_model="all")])


@pytest.mark.slow
def test_a_run_whose_logger_uploads_checkpoints_writes_them_on_the_training_thread(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = train_in_process(
        tmp_path, *FAST_DENOISE, "trainer.max_epochs=1", "test=false", "logger.wandb.log_model=all"
    )
    assert result["trainer"].strategy.checkpoint_io.background is False
    assert Path(result["best_checkpoint"]).is_file()
