"""Clean-image sources read from files: an image folder, real noisy/clean pairs, CIFAR-10 (``CleanSource``s).

* ``FolderImages``: every image under ``root`` (recursive), shuffled with ``split_seed`` and split by
  ``val_fraction`` / ``test_fraction`` (each non-zero fraction gets at least one image).
* ``PairedFolders``: real noisy/clean pairs from ``<root>/noisy/`` and ``<root>/clean/``: files are matched by
  relative path without extension (``noisy/a/x.png`` <-> ``clean/a/x.tif``) and split like a folder.
* ``CIFAR10Images``: CIFAR-10 from the official python pickles. val = ``val_fraction`` of the official train
  set (shuffled with ``split_seed``), train = the rest, test = the official test batch. ``max_images`` caps
  the train pool (before the val split) and the test batch separately.

``max_images`` keeps a random subset (chosen with ``split_seed``). All images are read into memory once
(CIFAR-10 as one uint8 array: 150 MB for all 50k).
"""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.cifar10_reader import read_cifar10
from datamodules.clean_sources import (
    CleanSource,
    ImageItem,
    Splits,
    cap_indices,
    check_fractions,
    split_indices,
)
from datamodules.image_io import list_images, read_image
from datamodules.loaders import check_int
from imagelab.core.errors import UserError


def _root(root: str | os.PathLike[str] | None, what: str) -> Path:
    """``root`` as a path; UserError when it is unset (null, or Hydra's ``???``)."""
    if root is None or str(root) == "???":
        raise UserError(f"data.source.root is not set: give {what} (data.source.root=/path)")
    return Path(root).expanduser()


class FolderImages(CleanSource):
    """All images under ``root`` (recursive), optionally capped to ``max_images``, split by image."""

    root_what = "the folder of clean images"  # for the message when root is not set

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        max_images: int | None = None,
    ) -> None:
        self.root = _root(root, self.root_what)
        check_fractions(val_fraction, test_fraction)
        check_int("source.split_seed", split_seed, 0)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        self.max_images = check_int("source.max_images", max_images, 1, allow_none=True)

    def _keep(self, n: int, what: str) -> dict[str, list[int]]:
        """Split indices into ``n`` items (after the ``max_images`` cap, as indices into the full list)."""
        keep = cap_indices(n, self.max_images, self.split_seed)
        index = split_indices(len(keep), self.val_fraction, self.test_fraction, self.split_seed, what)
        return {split: [keep[i] for i in idx] for split, idx in index.items()}

    def load(self) -> Splits:
        """The images of each split, read from their files."""
        paths = list_images(self.root)
        return {
            split: [ImageItem(name=str(paths[i]), clean=read_image(paths[i])) for i in idx]
            for split, idx in self._keep(len(paths), f"folder {self.root}").items()
        }

    def __repr__(self) -> str:
        return f"FolderImages({self.root})"


class PairedFolders(FolderImages):
    """Real noisy/clean pairs from ``<root>/noisy/`` and ``<root>/clean/``, matched by relative path.

    A file without its partner, two files with the same name but different extensions, or a pair whose sizes
    differ raise UserError naming the file(s).
    """

    paired = True
    root_what = "the folder holding noisy/ and clean/"

    def _find(self) -> dict[str, dict[str, Path]]:
        """``{"noisy": {relative name: path}, "clean": {...}}``, checked for duplicates and partners."""
        root = self.root
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
        return found

    def load(self) -> Splits:
        """The (clean, real noisy) pairs of each split, read from their files."""
        found = self._find()
        keys = sorted(found["noisy"])
        out: Splits = {}
        for split, idx in self._keep(len(keys), f"paired folder {self.root}").items():
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

    def __repr__(self) -> str:
        return f"PairedFolders({self.root})"


class CIFAR10Images(CleanSource):
    """CIFAR-10: train/val from the official train set, test = the official test batch (see module doc)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        download: bool = True,
        max_images: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        self.root = _root(root, "the data dir that holds cifar-10-batches-py/")
        self.download = bool(download)
        self.max_images = check_int("source.max_images", max_images, 1, allow_none=True)
        check_fractions(val_fraction, 0.0)
        check_int("source.split_seed", split_seed, 0)
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def prepare(self) -> None:
        """Download and check the CIFAR-10 archive when ``download`` is set and it is missing."""
        if self.download:
            read_cifar10(str(self.root), train=False, download=True)

    def load(self) -> Splits:
        """The CIFAR-10 images of each split (train/val from the official train set)."""
        train_images, _, _ = read_cifar10(self.root, train=True, download=self.download)
        test_images, _, _ = read_cifar10(self.root, train=False, download=False)
        keep = cap_indices(len(train_images), self.max_images, self.split_seed)
        index = split_indices(len(keep), self.val_fraction, 0.0, self.split_seed, f"CIFAR-10 at {self.root}")
        out: Splits = {}
        for split in ("train", "val"):
            out[split] = [ImageItem(f"cifar10 train #{keep[i]}", train_images[keep[i]]) for i in index[split]]
        n_test = len(test_images) if self.max_images is None else min(self.max_images, len(test_images))
        out["test"] = [ImageItem(f"cifar10 test #{i}", test_images[i]) for i in range(n_test)]
        return out

    def __repr__(self) -> str:
        return f"CIFAR10Images({self.root})"
