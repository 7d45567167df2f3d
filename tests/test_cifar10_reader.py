"""CIFAR-10 reader on tiny sets written in the official cifar-10-python format; offline failure is fast."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from datamodules import cifar10_reader
from datamodules.cifar10_reader import read_cifar10, write_cifar10_like
from imagelab.core.errors import UserError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _tiny_set(n_train: int = 20, n_test: int = 6):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (n_train, 32, 32, 3)).astype(np.uint8)
    test = rng.integers(0, 256, (n_test, 32, 32, 3)).astype(np.uint8)
    return train, np.arange(n_train) % 10, test, (np.arange(n_test) * 3) % 10


def test_round_trip_exact(tmp_path):
    train, train_labels, test, test_labels = _tiny_set()
    folder = write_cifar10_like(tmp_path, train, train_labels, test, test_labels, CLASSES)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]
    )
    images, labels, names = read_cifar10(tmp_path, train=True, download=False)
    assert images.dtype == np.uint8 and images.shape == (20, 32, 32, 3)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, train)
    np.testing.assert_array_equal(labels, train_labels)
    assert names == CLASSES
    images, labels, _ = read_cifar10(tmp_path, train=False, download=False)
    np.testing.assert_array_equal(images, test)
    np.testing.assert_array_equal(labels, test_labels)


def test_reads_the_official_channel_planar_layout(tmp_path):
    """Build a batch by hand exactly like the official files: row = 1024 R, then 1024 G, then 1024 B."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    red = np.zeros((32, 32), np.uint8)
    red[0, 1] = 200  # one pixel at row 0, column 1 in the red plane
    green = np.full((32, 32), 7, np.uint8)
    blue = np.arange(1024, dtype=np.int64).reshape(32, 32).astype(np.uint8)
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()])
    for i in range(1, 6):
        data = np.stack([row] * 4)  # 4 images per batch (official: 10000)
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": data, b"labels": [i, i, i, i]}, fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.stack([row] * 6), b"labels": [9] * 6}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, fh)
    images, labels, names = read_cifar10(tmp_path, train=True, download=False)
    assert images.shape == (20, 32, 32, 3)
    assert labels.tolist() == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4
    assert images[0, 0, 1, 0] == 200 and images[0, 0, 0, 0] == 0
    assert (images[..., 1] == 7).all()
    np.testing.assert_array_equal(images[3, :, :, 2], blue)
    assert names[0] == "airplane"
    assert read_cifar10(tmp_path, train=False, download=False)[0].shape == (6, 32, 32, 3)


def test_missing_without_download_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*download=true"):
        read_cifar10(tmp_path / "data", train=True, download=False)


def test_offline_download_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_reader, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        read_cifar10(tmp_path / "data", train=False, download=True)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "127.0.0.1:9" in message and str(tmp_path / "data" / "cifar-10-batches-py") in message
    assert "\n" not in message
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # no partial download left behind


def test_corrupt_batch_raises_user_error(tmp_path):
    train, train_labels, test, test_labels = _tiny_set()
    folder = write_cifar10_like(tmp_path, train, train_labels, test, test_labels, CLASSES)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match="data_batch_3"):
        read_cifar10(tmp_path, train=True, download=False)
