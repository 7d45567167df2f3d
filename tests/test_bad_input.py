"""User mistakes end in one readable line and a non-zero exit, with no traceback and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import assert_one_line_error, read_metrics, run_script


def test_unknown_config_key_and_option(tmp_path: Path) -> None:
    proc = run_script("train.py", "model.net.widht=8", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Could not override 'model.net.widht'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_script("train.py", "model=no_such_model", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Could not find 'model/no_such_model'" in proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.ckpt"))


@pytest.mark.slow
def test_bad_value_for_a_constructor(tmp_path: Path) -> None:
    bad_target = "model.net._target_=lightning_modules.networks.resnet9000.ResNet"
    proc = run_script("train.py", bad_target, "logger=none", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "resnet9000")


@pytest.mark.slow
def test_missing_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    proc = run_script(
        "train.py",
        "data=denoise_folder",
        f"data.source.root={missing}",
        "logger=none",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(proc, str(missing))
    record = read_metrics(next((tmp_path / "outputs").rglob("metrics.json")).parent)
    assert record["status"] == "failed" and str(missing) in record["error"]


@pytest.mark.slow
def test_unreadable_image_in_data_folder(tmp_path: Path) -> None:
    from skimage import data

    from datamodules.image_io import write_image

    folder = tmp_path / "clean"
    for i in range(6):
        write_image(folder / f"img{i}.png", data.camera()[i * 40 : i * 40 + 120, :160])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = run_script(
        "train.py",
        "data=denoise_folder",
        f"data.source.root={folder}",
        "logger=none",
        "debug=fast_dev_run",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(proc, "broken.png")


@pytest.fixture
def foreign_checkpoint(tmp_path: Path) -> Path:
    """A weights-only-loadable checkpoint whose run config describes a classifier."""
    import torch

    path = tmp_path / "classifier.ckpt"
    run_config = {"model": {"_target_": "lightning_modules.classifier.ClassifierModule"}, "data": {}}
    torch.save({"state_dict": {"w": torch.zeros(1)}, "run_config": run_config}, path)
    return path


def test_checkpoint_of_another_model(foreign_checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    from datamodules.image_io import write_image

    write_image(image, np.zeros((8, 8), np.uint8))
    proc = run_script(
        "denoise.py",
        f"ckpt_path={foreign_checkpoint}",
        f"input={image}",
        f"output={tmp_path / 'o'}",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(proc, "classifier", "not a denoiser")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_not_a_checkpoint_and_missing_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    proc = run_script("eval.py", f"ckpt_path={junk}", "logger=none", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "cannot read checkpoint", str(junk))
    proc = run_script(
        "eval.py", f"ckpt_path={tmp_path / 'nope.ckpt'}", "logger=none", cwd=tmp_path, check=False
    )
    assert_one_line_error(proc, "does not exist")


@pytest.mark.slow
def test_cifar10_not_available_offline(tmp_path: Path) -> None:
    proc = run_script(
        "train.py",
        "data=denoise_cifar10",
        f"data.source.root={tmp_path / 'data'}",
        "data.source.download=false",
        "logger=none",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(proc, "cifar-10-batches-py")
