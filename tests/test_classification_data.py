"""Classification data: image-folder layouts, splits, class names and clear errors; transforms; digits writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.image_io import write_image
from imagelab.core.errors import UserError

pytest.importorskip("lightning.pytorch")


def make_folder(root: Path, counts: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        for i in range(count):
            write_image(
                root / name / f"img_{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            )
    return root


def folder_data(root: Path, **kwargs):
    from datamodules.image_folder import ImageFolderDataModule

    options = {"image_size": "native", "batch_size": 4, "eval_batch_size": 8, "num_workers": 0}
    return ImageFolderDataModule(root=str(root), **{**options, **kwargs})


def test_one_folder_is_split_per_class_with_a_fixed_seed(tmp_path: Path) -> None:
    make_folder(tmp_path, {"cat": 20, "dog": 10, "emu": 5})
    data = folder_data(tmp_path, val_fraction=0.2, test_fraction=0.2)
    data.setup()
    assert data.class_names == ["cat", "dog", "emu"]
    counts = {s: np.bincount(data.splits[s].labels, minlength=3).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [12, 6, 3], "val": [4, 2, 1], "test": [4, 2, 1]}
    files = {s: set(data.splits[s].images) for s in ("train", "val", "test")}
    assert (
        not (files["train"] & files["val"])
        and not (files["train"] & files["test"])
        and not (files["val"] & files["test"])
    )
    again = folder_data(tmp_path, val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert [list(again.splits[s].images) for s in ("val", "test")] == [
        list(data.splits[s].images) for s in ("val", "test")
    ]
    other = folder_data(tmp_path, val_fraction=0.2, test_fraction=0.2, split_seed=1)
    other.setup()
    assert list(other.splits["val"].images) != list(data.splits["val"].images)
    sized = folder_data(
        tmp_path, val_fraction=0.2, test_fraction=0.2, image_size=12, mean=[0.5] * 3, std=[0.25] * 3
    )
    sized.setup()
    x, y = next(iter(sized.val_dataloader()))
    assert x.shape == (7, 3, 12, 12) and x.dtype.is_floating_point and y.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert float(x.min()) >= -2.0 - 1e-6 and float(x.max()) <= 2.0 + 1e-6  # (v - 0.5) / 0.25 for v in [0, 1]
    # the data reports its config to the model (one way): classes and the preprocessing, backbone defaults
    # looked up by the backbone's name in timm (no model object)
    vit = folder_data(
        tmp_path, val_fraction=0.2, test_fraction=0.2, image_size="backbone", backbone="test_vit"
    )
    vit.setup()
    assert vit.data_config() == {
        "class_names": ["cat", "dog", "emu"],
        "preprocess": {"image_size": [160, 160], "mean": [0.5] * 3, "std": [0.5] * 3, "channels": 3,
                       "interpolation": "bicubic", "crop_pct": 1.0},
    }  # fmt: skip
    with pytest.raises(UserError, match=r"image_size=backbone needs data\.backbone"):
        folder_data(tmp_path, image_size="backbone").data_config()
    with pytest.raises(UserError, match="timm has no data config"):
        folder_data(tmp_path, backbone="no_such_net").data_config()


def test_train_val_test_folders_and_test_falling_back_to_val(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 3, "b": 3})
    make_folder(tmp_path / "val", {"a": 1, "b": 2})
    data = folder_data(tmp_path)
    data.setup()
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    make_folder(tmp_path / "test", {"b": 2})  # a test set may lack classes
    data = folder_data(tmp_path)
    data.setup()
    assert data.splits["test"].labels.tolist() == [1, 1] and data.class_names == ["a", "b"]


def test_drop_last_skips_only_the_partial_training_batch(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 5, "b": 5})
    make_folder(tmp_path / "val", {"a": 3, "b": 3})
    kept, dropped = folder_data(tmp_path), folder_data(tmp_path, drop_last=True)
    for data in (kept, dropped):
        data.setup()
    assert [len(b[1]) for b in kept.train_dataloader()] == [4, 4, 2]
    assert [len(b[1]) for b in dropped.train_dataloader()] == [4, 4]
    assert [len(b[1]) for b in dropped.val_dataloader()] == [6]  # eval_batch_size 8: every image is scored


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty_class", r"class folder .*empty_class.* has no images"),
        ("missing_in_val", r"class 'b' has no images in .*val"),
        ("unknown_in_val", r"class 'zebra' of .*val has no folder in .*train"),
        ("no_val", r"has train/ but no val/"),
        ("unreadable", r"cannot read image .*broken\.png"),
        ("too_few", r"class 'b' has 2 image\(s\).*needs at least 3"),
        ("no_classes", r"has no class sub-folders"),
    ],
)
def test_folder_mistakes_are_clear_errors(layout: str, message: str, tmp_path: Path) -> None:
    if layout == "empty_class":
        make_folder(tmp_path, {"a": 4})
        (tmp_path / "empty_class").mkdir()
    elif layout == "missing_in_val":
        make_folder(tmp_path / "train", {"a": 2, "b": 2})
        make_folder(tmp_path / "val", {"a": 1})
    elif layout == "unknown_in_val":
        make_folder(tmp_path / "train", {"a": 2})
        make_folder(tmp_path / "val", {"a": 1, "zebra": 1})
    elif layout == "no_val":
        make_folder(tmp_path / "train", {"a": 2})
    elif layout == "unreadable":
        make_folder(tmp_path, {"a": 4, "b": 4})
        (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    elif layout == "too_few":
        make_folder(tmp_path, {"a": 4, "b": 2})
    else:
        write_image(tmp_path / "loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match=message):
        folder_data(tmp_path).setup()


def test_option_mistakes_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.image_size"):
        folder_data(tmp_path, image_size="huge")
    with pytest.raises(UserError, match=r"data\.augment"):
        folder_data(tmp_path, augment="extreme")
    with pytest.raises(UserError, match=r"data\.mixup"):
        folder_data(tmp_path, mixup={"mixup_alhpa": 0.2})
    with pytest.raises(UserError, match=r"even data\.batch_size"):
        folder_data(tmp_path, mixup={"mixup_alpha": 0.2}, batch_size=5)
    make_folder(tmp_path / "mixed", {"a": 3})
    make_folder(tmp_path / "mixed", {"b": 3}, size=20)
    data = folder_data(tmp_path / "mixed", test_fraction=0.0, val_fraction=0.34)
    data.setup()
    with pytest.raises(UserError, match="image_size=native needs images of one size"):
        data.train_dataloader()


def test_transforms_resize_gray_and_16_bit(tmp_path: Path) -> None:
    import torch

    from datamodules.classification_transforms import build_transform, to_uint8_chw

    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    x = to_uint8_chw(gray16, channels=3)
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and int(x[0, 7, 7]) == round(63000 / 257)
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 1] = 200
    assert to_uint8_chw(rgb, channels=1).shape == (1, 5, 7) and int(to_uint8_chw(rgb, 1)[0, 0, 0]) == round(
        0.587 * 200
    )
    common = {
        "native": (8, 8),
        "strong_policy": "trivialaugment",
        "random_erasing": 1.0,
        "mean": [0.5],
        "std": [0.5],
    }
    train = build_transform(True, size=(32, 32), augment="strong", **common)
    evaluate = build_transform(False, size=(32, 32), augment="strong", **common)
    gray = to_uint8_chw(gray16, channels=1)
    torch.manual_seed(0)
    assert train(gray).shape == (1, 32, 32) and evaluate(gray).shape == (1, 32, 32)
    assert torch.equal(evaluate(gray), evaluate(gray))  # eval is deterministic
    assert not torch.equal(train(gray), train(gray))  # training augments


def test_digits_written_as_png_class_folders(tmp_path: Path) -> None:
    from datamodules.digits import digits_arrays, write_digits_folder
    from datamodules.image_io import read_image

    images, labels = digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    root = write_digits_folder(tmp_path / "digits", limit=40)
    files = sorted((root / str(labels[7])).glob("*.png"))
    assert (root / str(labels[7]) / "digit_0007.png") in files
    assert np.array_equal(read_image(root / str(labels[7]) / "digit_0007.png"), images[7])
    assert len(list(root.rglob("*.png"))) == 40 and (root / ".complete").is_file()
