"""Where the images of a denoising experiment come from, split BY IMAGE into train / val / test.

Each ``*_source`` function returns ``{"train": [...], "val": [...], "test": [...]}`` lists of ``ImageItem``:
the pixels as stored (uint8/uint16, (H, W) or (H, W, 3)), a name for messages, and for paired data the real
noisy image. Channel conversion, cropping and synthetic noise happen later, in ``datamodules.denoising``.

* ``skimage_source``: photos bundled with scikit-image (no download); ``SKIMAGE_PHOTOS`` lists the valid
  names, ``DEFAULT_SKIMAGE_SPLIT`` the default split (the classic ``camera`` is a test image).
* ``folder_source``: every image under a folder (recursive), shuffled with ``split_seed`` and split by
  ``val_fraction`` / ``test_fraction`` (each non-zero fraction gets at least one image).
* ``cifar10_source``: CIFAR-10 from the official python pickles. val = ``val_fraction`` of the official train
  set (shuffled with ``split_seed``), train = the rest, test = the official test batch. ``max_images`` caps
  the train pool (before the val split) and the test batch separately; ``test_fraction`` is not used.
* ``paired_source``: real noisy/clean pairs from ``<root>/noisy/`` and ``<root>/clean/``: files are matched
  by relative path without extension (``noisy/a/x.png`` <-> ``clean/a/x.tif``) and split like a folder.

All images are read into memory once (CIFAR-10 as one uint8 array: 150 MB for all 50k).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.image_io import list_images, read_image
from experiment_utils.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")

SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "colour portrait, 512x512",
    "brick": "brick wall texture, gray 512x512",
    "camera": "the classic cameraman, gray 512x512",
    "cell": "microscopy cell, gray 660x550",
    "chelsea": "colour cat photo, 300x451",
    "clock": "clock with motion blur, gray 300x400",
    "coffee": "colour coffee cup, 400x600",
    "coins": "coins, gray 303x384",
    "grass": "grass texture, gray 512x512",
    "gravel": "gravel texture, gray 512x512",
    "hubble_deep_field": "colour Hubble deep field, 872x1000",
    "immunohistochemistry": "colour microscopy stain, 512x512",
    "microaneurysms": "retina detail, gray 102x102 (too small for eval_crop 256 / big patches)",
    "moon": "moon surface, gray 512x512",
    "page": "scanned text page, gray 191x384",
    "retina": "colour fundus photo, 1411x1411",
    "rocket": "colour rocket launch, 427x640",
    "stereo_motorcycle": "left view of the colour stereo pair, 500x741",
    "text": "text in a photo, gray 172x448",
}
"""scikit-image sample photos that ship with the package (load offline), name -> description.

Excluded: images that need the optional ``pooch`` download (brain, cells3d, eagle, human_mitosis, kidney,
lily, nickel_solidification, palisades_of_vogt, protein_transport, skin, vortex), binary/synthetic ones
(binary_blobs, checkerboard, colorwheel, horse, logo, shepp_logan_phantom) and ``cat`` (same photo as
``chelsea``).
"""

DEFAULT_SKIMAGE_SPLIT: dict[str, list[str]] = {
    "train": [
        "brick",
        "cell",
        "clock",
        "coffee",
        "grass",
        "gravel",
        "hubble_deep_field",
        "immunohistochemistry",
        "page",
        "retina",
        "rocket",
        "stereo_motorcycle",
        "text",
    ],
    "val": ["coins", "moon"],
    "test": ["camera", "astronaut", "chelsea"],
}
"""Default split by image: 13 train, 2 val, 3 test (every val/test image is at least 256x256)."""


@dataclass
class ImageItem:
    """One clean image (pixels as stored) with a name for messages, and the real noisy image for pairs."""

    name: str
    clean: np.ndarray
    noisy: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.clean.shape[0]), int(self.clean.shape[1])


Splits = dict[str, list[ImageItem]]


# --------------------------------------------------------------------------------------------- skimage


def load_skimage_photo(name: str) -> np.ndarray:
    """Load one of ``SKIMAGE_PHOTOS`` as uint8 (H, W) or (H, W, 3)."""
    if name not in SKIMAGE_PHOTOS:
        raise UserError(f"unknown skimage image {name!r}; valid names: {', '.join(sorted(SKIMAGE_PHOTOS))}")
    import skimage.data

    try:
        image = getattr(skimage.data, name)()
    except Exception as exc:
        raise UserError(f"cannot load skimage image {name!r} ({exc}); choose another image") from exc
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image.astype(np.uint8, copy=False))


def skimage_source(spec: Mapping[str, Sequence[str]] | None = None) -> Splits:
    """Load the skimage photos named per split in ``spec`` (None = ``DEFAULT_SKIMAGE_SPLIT``).

    Raises UserError for an unknown split key or image name, or a name used in two splits.
    """
    spec = DEFAULT_SKIMAGE_SPLIT if spec is None else spec
    if not isinstance(spec, Mapping):
        raise UserError(f"skimage_images must be a dict with keys {', '.join(SPLITS)}, got {spec!r}")
    bad = sorted(set(map(str, spec)) - set(SPLITS))
    if bad:
        raise UserError(
            f"skimage_images has unknown key(s) {', '.join(bad)}; valid keys: {', '.join(SPLITS)}"
        )
    seen: dict[str, str] = {}
    out: Splits = {s: [] for s in SPLITS}
    for split in SPLITS:
        names = spec.get(split) or []
        if isinstance(names, str):
            names = [names]
        for name in names:
            if name not in SKIMAGE_PHOTOS:
                raise UserError(
                    f"unknown skimage image {name!r} in skimage_images.{split}; "
                    f"valid names: {', '.join(sorted(SKIMAGE_PHOTOS))}"
                )
            if name in seen:
                raise UserError(
                    f"skimage image {name!r} is in both skimage_images.{seen[name]} and .{split}; "
                    "each image may be in one split only"
                )
            seen[name] = split
            out[split].append(ImageItem(name=name, clean=load_skimage_photo(name)))
    return out


# --------------------------------------------------------------------------------------------- splitting


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """UserError unless 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1."""
    for key, value, low_ok in (("val_fraction", val_fraction, False), ("test_fraction", test_fraction, True)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 <= value < 1):
            raise UserError(f"{key} must be a number in [0, 1), got {value!r}")
        if value == 0 and not low_ok:
            raise UserError(f"{key} must be > 0 (validation needs images), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"val_fraction + test_fraction must be < 1 to leave training images, "
            f"got {val_fraction} + {test_fraction}"
        )


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int, what: str
) -> dict[str, list[int]]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into train/val/test index lists (each sorted).

    Each non-zero fraction gets ``max(1, round(fraction * n))`` images; at least one must remain for train,
    otherwise UserError naming ``what`` (e.g. the folder).
    """
    check_fractions(val_fraction, test_fraction)
    n_val = max(1, round(val_fraction * n))
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise UserError(
            f"too few images in {what}: {n} found, need at least {n_val + n_test + 1} for "
            f"val_fraction={val_fraction} and test_fraction={test_fraction}; "
            "add images or lower the fractions"
        )
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(int(i) for i in perm[:n_test])
    val = sorted(int(i) for i in perm[n_test : n_test + n_val])
    train = sorted(int(i) for i in perm[n_test + n_val :])
    return {"train": train, "val": val, "test": test}


def _check_max_images(max_images: Any) -> int | None:
    if max_images is None:
        return None
    if not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1:
        raise UserError(f"max_images must be a positive integer or null, got {max_images!r}")
    return max_images


def _cap(n: int, max_images: int | None, seed: int) -> list[int]:
    """Indices of at most ``max_images`` of ``n`` items, chosen at random with ``seed`` (all when None)."""
    if max_images is None or max_images >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng([seed, 1]).permutation(n)[:max_images])


# --------------------------------------------------------------------------------------------- folders


def folder_source(
    root: str | os.PathLike[str] | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    max_images: int | None = None,
) -> Splits:
    """All images under ``root`` (recursive), optionally capped to ``max_images``, split by image."""
    if root is None:
        raise UserError(
            "source=folder needs root: the folder of clean images (set data.root=/path/to/images)"
        )
    root = Path(root).expanduser()
    paths = list_images(root)
    keep = _cap(len(paths), _check_max_images(max_images), split_seed)
    paths = [paths[i] for i in keep]
    index = split_indices(len(paths), val_fraction, test_fraction, split_seed, f"folder {root}")
    return {
        split: [ImageItem(name=str(paths[i]), clean=read_image(paths[i])) for i in idx]
        for split, idx in index.items()
    }


def paired_source(
    root: str | os.PathLike[str] | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    max_images: int | None = None,
) -> Splits:
    """Real noisy/clean pairs from ``<root>/noisy/`` and ``<root>/clean/``, matched by relative path.

    A file without its partner, two files with the same name but different extensions, or a pair whose
    sizes differ raise UserError naming the file(s).
    """
    if root is None:
        raise UserError("source=paired needs root: the folder holding noisy/ and clean/ (set data.root=...)")
    root = Path(root).expanduser()
    for sub in ("noisy", "clean"):
        if not (root / sub).is_dir():
            raise UserError(
                f"paired data needs the folder {root / sub} (with matching files in noisy/ and clean/)"
            )
    found: dict[str, dict[str, Path]] = {}
    for sub in ("noisy", "clean"):
        found[sub] = {}
        for path in list_images(root / sub):
            key = path.relative_to(root / sub).with_suffix("").as_posix()
            if key in found[sub]:
                raise UserError(
                    f"{found[sub][key]} and {path} have the same name; "
                    f"keep one file per image in {root / sub}"
                )
            found[sub][key] = path
    for sub, other in (("noisy", "clean"), ("clean", "noisy")):
        for key, path in found[sub].items():
            if key not in found[other]:
                raise UserError(
                    f"{path} has no partner: expected {root / other / key}.<ext> with the same relative name"
                )
    keys = sorted(found["noisy"])
    keep = _cap(len(keys), _check_max_images(max_images), split_seed)
    keys = [keys[i] for i in keep]
    index = split_indices(len(keys), val_fraction, test_fraction, split_seed, f"paired folder {root}")
    out: Splits = {}
    for split, idx in index.items():
        out[split] = []
        for i in idx:
            noisy_path, clean_path = found["noisy"][keys[i]], found["clean"][keys[i]]
            noisy, clean = read_image(noisy_path), read_image(clean_path)
            if noisy.shape[:2] != clean.shape[:2]:
                raise UserError(
                    f"noisy {noisy_path} is {noisy.shape[0]}x{noisy.shape[1]} but clean {clean_path} is "
                    f"{clean.shape[0]}x{clean.shape[1]}; pairs must have the same size"
                )
            out[split].append(ImageItem(name=str(clean_path), clean=clean, noisy=noisy))
    return out


# --------------------------------------------------------------------------------------------- CIFAR-10


def cifar10_source(
    root: str | os.PathLike[str] | None,
    download: bool = True,
    max_images: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """CIFAR-10: train/val from the official train set, test = the official test batch (see module doc)."""
    from datamodules.cifar10_reader import read_cifar10

    if root is None:
        raise UserError("source=cifar10 needs root: the data dir that holds cifar-10-batches-py/")
    cap = _check_max_images(max_images)
    check_fractions(val_fraction, 0.0)
    train_images, _, _ = read_cifar10(root, train=True, download=download)
    test_images, _, _ = read_cifar10(root, train=False, download=False)
    keep = _cap(len(train_images), cap, split_seed)
    index = split_indices(len(keep), val_fraction, 0.0, split_seed, f"CIFAR-10 train set at {root}")
    out: Splits = {}
    for split in ("train", "val"):
        out[split] = [ImageItem(f"cifar10 train #{keep[i]}", train_images[keep[i]]) for i in index[split]]
    n_test = len(test_images) if cap is None else min(cap, len(test_images))
    out["test"] = [ImageItem(f"cifar10 test #{i}", test_images[i]) for i in range(n_test)]
    return out
