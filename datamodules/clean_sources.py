"""Where the clean images of a denoising experiment come from, split BY IMAGE into train / val / test.

A source is a ``CleanSource``: ``load()`` returns ``{"train": [...], "val": [...], "test": [...]}`` lists of
``ImageItem`` (the pixels as stored, uint8/uint16, (H, W) or (H, W, 3), a name for messages, and for paired
data the real noisy image). Channel conversion, cropping and synthetic noise happen later, in
``datamodules.denoising``. The config picks a source by ``_target_`` (presets in ``conf/data/source/``):

* ``SkimagePhotos``: photos bundled with scikit-image (no download); ``SKIMAGE_PHOTOS`` lists the valid
  names, ``DEFAULT_SKIMAGE_SPLIT`` the default split (the classic ``camera`` is a test image).
* ``datamodules.file_sources.FolderImages`` / ``PairedFolders`` / ``CIFAR10Images``: an image folder, real
  noisy/clean pairs, CIFAR-10 (see that module).

A new source is one ``CleanSource`` subclass implementing ``load`` plus one YAML file with its ``_target_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import skimage.data

from imagelab.config.instantiation import build_instance
from imagelab.core.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")

DEFAULT_SOURCE: dict[str, Any] = {"_target_": "datamodules.clean_sources.SkimagePhotos"}
"""The source of a data module built without one: the default skimage split."""

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


class CleanSource(ABC):
    """The interface of a clean-image source: ``load`` reads every image once and splits them by image.

    ``paired`` is True for sources whose items carry a real noisy image (the noise model is then not used).
    ``prepare`` runs once on the main process before ``load`` (e.g. a download).
    """

    paired: bool = False

    @abstractmethod
    def load(self) -> Splits:
        """The images of each split in ``SPLITS`` (lists may be empty; train and val must not be)."""

    def prepare(self) -> None:
        """Fetch what ``load`` needs (nothing by default)."""
        return None

    def __repr__(self) -> str:
        return type(self).__name__


def build_source(node: Any, what: str = "data.source") -> CleanSource:
    """The ``CleanSource`` of a ``_target_`` config node (or a source as is); None = ``DEFAULT_SOURCE``."""
    return build_instance(DEFAULT_SOURCE if node is None else node, CleanSource, what)


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


def cap_indices(n: int, max_images: int | None, seed: int) -> list[int]:
    """Indices of at most ``max_images`` of ``n`` items, chosen at random with ``seed`` (all when None)."""
    if max_images is None or max_images >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng([seed, 1]).permutation(n)[:max_images])


# --------------------------------------------------------------------------------------------- skimage


def load_skimage_photo(name: str) -> np.ndarray:
    """Load one of ``SKIMAGE_PHOTOS`` as uint8 (H, W) or (H, W, 3)."""
    if name not in SKIMAGE_PHOTOS:
        raise UserError(f"unknown skimage image {name!r}; valid names: {', '.join(sorted(SKIMAGE_PHOTOS))}")
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


class SkimagePhotos(CleanSource):
    """The scikit-image photos named per split in ``images`` (None = ``DEFAULT_SKIMAGE_SPLIT``).

    Raises UserError (when built) for an unknown split key or image name, or a name used in two splits.
    """

    def __init__(self, images: Mapping[str, Sequence[str] | str | None] | None = None) -> None:
        spec = DEFAULT_SKIMAGE_SPLIT if images is None else images
        where = "data.source.images"
        if not isinstance(spec, Mapping):
            raise UserError(f"{where} must be a dict with keys {', '.join(SPLITS)}, got {spec!r}")
        bad = sorted(set(map(str, spec)) - set(SPLITS))
        if bad:
            raise UserError(f"{where} has unknown key(s) {', '.join(bad)}; valid keys: {', '.join(SPLITS)}")
        seen: dict[str, str] = {}
        self.images: dict[str, list[str]] = {}
        for split in SPLITS:
            names = spec.get(split) or []
            names = [names] if isinstance(names, str) else list(names)
            for name in names:
                if name not in SKIMAGE_PHOTOS:
                    raise UserError(
                        f"unknown skimage image {name!r} in {where}.{split}; "
                        f"valid names: {', '.join(sorted(SKIMAGE_PHOTOS))}"
                    )
                if name in seen:
                    raise UserError(
                        f"skimage image {name!r} is in both {where}.{seen[name]} and .{split}; "
                        "each image may be in one split only"
                    )
                seen[name] = split
            self.images[split] = names

    def load(self) -> Splits:
        """The photos of each split, loaded from scikit-image's bundled files."""
        return {
            split: [ImageItem(name=name, clean=load_skimage_photo(name)) for name in names]
            for split, names in self.images.items()
        }

    def __repr__(self) -> str:
        return f"SkimagePhotos({', '.join(f'{s}={len(n)}' for s, n in self.images.items())})"
