"""last.ckpt saved right after best.ckpt of the same step is a hard link to it, with the state Lightning writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from imagelab.callbacks.model_checkpoint import ModelCheckpoint
from imagelab.core import atomic
from imagelab.core.atomic import PARTIAL_MARK, atomic_link
from imagelab.core.checkpoint_io import AtomicCheckpointIO, wait_for_checkpoint_writes
from tests.helpers.brightness import BrightnessData, BrightnessModule


class EpochScored(BrightnessModule):
    """The brightness regression with ``val/epoch`` (the epoch number) logged: every epoch is a new best."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/epoch", float(self.current_epoch))


class FirstEpochBest(BrightnessModule):
    """The brightness regression with ``val/epoch`` logged negated every epoch: the first epoch stays the best."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/epoch", -float(self.current_epoch))


class InodesAtEpochStart(pl.Callback):
    """(inode of best.ckpt, inode of last.ckpt) as each epoch starts, i.e. as the previous epoch left them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: list[tuple[int, int]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            wait_for_checkpoint_writes(trainer)  # the previous epoch's files are written in the background
            self.seen.append(tuple(os.stat(self.folder / f"{n}.ckpt").st_ino for n in ("best", "last")))


def _fit(
    folder: Path,
    checkpoint_cls: type,
    epochs: int,
    ckpt_path: str | None = None,
    module_cls: type[BrightnessModule] = EpochScored,
) -> InodesAtEpochStart:
    pl.seed_everything(0)
    inodes = InodesAtEpochStart(folder)
    checkpoint = checkpoint_cls(
        dirpath=folder, filename="best", monitor="val/epoch", mode="max", save_top_k=1, save_last=True
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        callbacks=[inodes, checkpoint],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module_cls(), datamodule=BrightnessData(batch_size=32), ckpt_path=ckpt_path)
    return inodes


def _callback_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    [state] = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    return state


def test_last_is_written_once_and_holds_what_lightning_writes(tmp_path: Path) -> None:
    ours = _fit(tmp_path / "ours", ModelCheckpoint, epochs=3)
    _fit(tmp_path / "lightning", LightningModelCheckpoint, epochs=3)
    assert all(best == last for best, last in ours.seen)  # every epoch, the first one too, writes once
    best, last = (os.stat(tmp_path / "ours" / f"{n}.ckpt") for n in ("best", "last"))
    assert best.st_ino == last.st_ino and best.st_nlink == 2
    mine = torch.load(tmp_path / "ours" / "last.ckpt", weights_only=False)
    theirs = torch.load(tmp_path / "lightning" / "last.ckpt", weights_only=False)
    assert mine["epoch"] == theirs["epoch"] == 2
    assert mine["global_step"] == theirs["global_step"]
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    for name, value in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][name], value), name
    state, lightning_state = _callback_state(mine), _callback_state(theirs)
    for key in ("best_model_path", "last_model_path", "kth_best_model_path"):
        assert Path(state[key]).name == Path(lightning_state[key]).name
    assert state["last_model_path"] == str(tmp_path / "ours" / "last.ckpt")
    assert not list((tmp_path / "ours").glob(f".*{PARTIAL_MARK}*"))


def test_last_is_the_last_epoch_when_the_metric_stops_improving(tmp_path: Path) -> None:
    inodes = _fit(tmp_path, ModelCheckpoint, epochs=3, module_cls=FirstEpochBest)
    best = torch.load(tmp_path / "best.ckpt", weights_only=False)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert best["epoch"] == 0 and last["epoch"] == 2  # Lightning 2.6 alone leaves last.ckpt at epoch 0
    assert last["global_step"] == 9
    assert (
        inodes.seen[0][0] == inodes.seen[0][1] and inodes.seen[1][0] != inodes.seen[1][1]
    )  # epoch 1 wrote its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.parametrize("first_epochs", [1, 2])
def test_a_run_resumed_from_the_linked_last_keeps_its_file_names(tmp_path: Path, first_epochs: int) -> None:
    _fit(tmp_path, ModelCheckpoint, epochs=first_epochs)
    _fit(tmp_path, ModelCheckpoint, epochs=4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no last-v1.ckpt
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 3
    assert os.stat(tmp_path / "best.ckpt").st_ino == os.stat(tmp_path / "last.ckpt").st_ino


def test_atomic_link_copies_where_hard_links_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    source.write_bytes(b"state" * 1000)
    target.write_bytes(b"old")

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    atomic_link(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_ino != os.stat(source).st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
