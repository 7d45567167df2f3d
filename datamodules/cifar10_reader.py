"""Read (and, for tests, write) CIFAR-10 in the official ``cifar-10-python`` layout, without torchvision.

Layout: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: python pickles (read with
``encoding="bytes"``) holding ``b"data"`` (N x 3072 uint8, channel-planar R, G, B planes of 32x32),
``b"labels"`` and, in ``batches.meta``, ``b"label_names"``. The batch files are not MD5-checked (so small
hand-made sets in the same format work); only a freshly downloaded archive is.

When the files are missing and ``download=True`` the official archive is fetched from ``CIFAR10_URL`` (a
module constant, so tests can point it at an unreachable address) with a short network timeout: offline
machines get a one-line UserError telling where to put the extracted folder instead of a long hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imagelab.core.atomic import atomic_write
from imagelab.core.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Where the official archive is downloaded from (override in tests)."""
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
"""MD5 of the official archive (checked after download; extracted batch files are not checked)."""
CIFAR10_FOLDER = "cifar-10-batches-py"
"""Name of the folder inside ``root`` that holds the batch files."""
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES: tuple[str, ...] = ("test_batch",)
META_FILE = "batches.meta"
DOWNLOAD_TIMEOUT_S = 10.0
"""Seconds to wait for the server to answer (connect and each read) before failing."""


def cifar10_dir(root: str | os.PathLike[str]) -> Path:
    """The folder ``<root>/cifar-10-batches-py`` that holds the batch files."""
    return Path(root).expanduser() / CIFAR10_FOLDER


def _missing(folder: Path) -> list[str]:
    return [n for n in (*TRAIN_FILES, *TEST_FILES, META_FILE) if not (folder / n).is_file()]


def read_cifar10(
    root: str | os.PathLike[str], train: bool, download: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load the CIFAR-10 train (50k) or test (10k) split from ``root``, downloading it first if allowed.

    Returns ``(images, labels, class_names)``: uint8 images N x 32 x 32 x 3 (RGB), int64 labels N and the
    10 class names. Raises UserError when the files are missing and cannot be downloaded, or are corrupt.
    """
    folder = cifar10_dir(root)
    missing = _missing(folder)
    if missing:
        if not download:
            raise UserError(
                f"CIFAR-10 not found: expected {folder}/ with {', '.join(missing)}; place the extracted "
                f"cifar-10-python folder there (from {CIFAR10_URL}) or set download=true"
            )
        download_cifar10(root)
        missing = _missing(folder)
        if missing:
            raise UserError(
                f"CIFAR-10 download did not produce {folder}/{missing[0]}; delete {folder} and retry"
            )
    class_names = [
        n.decode("utf-8") if isinstance(n, bytes) else str(n)
        for n in _load_pickle(folder / META_FILE).get(b"label_names", [])
    ]
    images, labels = [], []
    for name in TRAIN_FILES if train else TEST_FILES:
        batch = _load_pickle(folder / name)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = np.asarray(batch[b"labels"], dtype=np.int64)
            data = data.reshape(-1, 3, 32, 32)
        except (KeyError, ValueError) as exc:
            raise UserError(
                f"CIFAR-10 batch file {folder / name} is not in the cifar-10-python format ({exc}); "
                "delete it and download again"
            ) from exc
        if len(lab) != len(data):
            raise UserError(
                f"CIFAR-10 batch file {folder / name} has {len(data)} images but {len(lab)} labels"
            )
        images.append(data.transpose(0, 2, 3, 1))
        labels.append(lab)
    out_images = (
        np.ascontiguousarray(np.concatenate(images)) if images else np.zeros((0, 32, 32, 3), np.uint8)
    )
    out_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if len(class_names) == 0 and len(out_labels):
        class_names = [str(i) for i in range(int(out_labels.max()) + 1)]
    return out_images, out_labels, class_names


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except Exception as exc:
        raise UserError(
            f"cannot read CIFAR-10 file {path} ({type(exc).__name__}); delete it and download again"
        ) from exc
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR-10 file {path} does not hold a dict; delete it and download again")
    return obj


def download_cifar10(root: str | os.PathLike[str]) -> Path:
    """Download the official archive from ``CIFAR10_URL``, check its MD5 and extract it into ``root``.

    Fails fast (``DOWNLOAD_TIMEOUT_S``) with a UserError when there is no network.
    """
    root = Path(root).expanduser()
    folder = cifar10_dir(root)
    url = CIFAR10_URL
    hint = (
        f"put the extracted cifar-10-python folder at {folder} (fetch the archive elsewhere) or retry online"
    )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create CIFAR-10 data folder {root} ({exc}); set a writable data dir"
        ) from exc
    fd, tmp = tempfile.mkstemp(prefix=".cifar-10-python.", suffix=".tar.gz", dir=root)
    os.close(fd)
    try:
        md5 = hashlib.md5()
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "imagelab"})
            with (
                urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
                open(tmp, "wb") as fh,
            ):
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    md5.update(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UserError(
                f"CIFAR-10 not found at {folder} and download from {url} failed ({reason}); {hint}"
            ) from exc
        if md5.hexdigest() != CIFAR10_MD5:
            raise UserError(
                f"CIFAR-10 archive downloaded from {url} has the wrong MD5 (corrupt download); {hint}"
            )
        try:
            with tarfile.open(tmp, "r:gz") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"cannot extract the CIFAR-10 archive into {root} ({exc}); {hint}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return folder


def write_cifar10_like(
    root: str | os.PathLike[str],
    train_images: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test_images: np.ndarray,
    test_labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> Path:
    """Write images (N x 32 x 32 x 3 uint8, RGB) in the official cifar-10-python format under ``root``.

    The train images are split over ``data_batch_1..5`` (as evenly as possible, some may be empty), the test
    images go to ``test_batch``. Meant for tests and small custom sets. Returns the batch folder.
    """
    folder = cifar10_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    train_images, test_images = np.asarray(train_images), np.asarray(test_images)
    for name, imgs in (("train", train_images), ("test", test_images)):
        if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1:] != (32, 32, 3):
            raise ValueError(f"{name} images must be uint8 N x 32 x 32 x 3, got {imgs.dtype} {imgs.shape}")
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    if len(train_labels) != len(train_images) or len(test_labels) != len(test_images):
        raise ValueError("need exactly one label per image")

    def dump(path: Path, obj: dict) -> None:
        def writer(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                pickle.dump(obj, fh, protocol=2)

        atomic_write(path, writer)

    def batch(label: str, imgs: np.ndarray, labs: np.ndarray, first: int) -> dict:
        return {
            b"batch_label": label.encode(),
            b"labels": [int(x) for x in labs],
            b"data": np.ascontiguousarray(imgs.transpose(0, 3, 1, 2).reshape(len(imgs), 3072)),
            b"filenames": [f"image_{first + i:05d}.png".encode() for i in range(len(imgs))],
        }

    first = 0
    for i, idx in enumerate(np.array_split(np.arange(len(train_images)), len(TRAIN_FILES))):
        dump(
            folder / TRAIN_FILES[i],
            batch(f"training batch {i + 1} of 5", train_images[idx], train_labels[idx], first),
        )
        first += len(idx)
    dump(folder / TEST_FILES[0], batch("testing batch 1 of 1", test_images, test_labels, 0))
    meta = {
        b"label_names": [str(n).encode() for n in class_names],
        b"num_cases_per_batch": int(np.ceil(len(train_images) / len(TRAIN_FILES))),
        b"num_vis": 3072,
    }
    dump(folder / META_FILE, meta)
    return folder
