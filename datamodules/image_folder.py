"""Classification on the user's own images: one sub-folder per class.

Two layouts under ``root`` (image files are searched recursively inside each class folder):

* ``root/train/<class>/...`` and ``root/val/<class>/...``, optionally ``root/test/<class>/...`` (without a
  test folder the val images are also the test set);
* ``root/<class>/...``: one folder, split per class with a fixed seed into ``val_fraction`` and
  ``test_fraction`` (``test_fraction=0``: the val images are also the test set).

Class names are the folder names, sorted; they are saved with the checkpoint by the classifier. An empty
class, a class missing from val, a val/test class unknown to train, or an unreadable file is a UserError
naming the folder or file. Files are checked (header read) when the data is set up (``check_files``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.classification import (
    ClassificationDataModule,
    SplitData,
    stratified_split,
    subset,
)
from datamodules.image_io import list_images, read_image
from datamodules.loaders import check_int
from imagelab.core.errors import UserError, first_line

log = logging.getLogger(__name__)


def scan_class_folders(folder: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` for every non-hidden sub-folder of ``folder``."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; point data.root at your images")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"{folder} has no class sub-folders: put the images of each class in {folder}/<class name>/"
        )
    found = {}
    for class_dir in classes:
        try:
            found[class_dir.name] = list_images(class_dir)
        except UserError:
            raise UserError(
                f"class folder {class_dir} has no images: add some or remove the folder"
            ) from None
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header; UserError naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except Exception:  # Pillow cannot open every TIFF that image_io reads: decode fully before giving up
        try:
            array = read_image(path)
            return int(array.shape[0]), int(array.shape[1])
        except Exception as exc:
            raise UserError(
                f"cannot read image {path} ({first_line(exc, 120)}): replace or delete it"
            ) from None


class ImageFolderDataModule(ClassificationDataModule):
    """Image classification from class folders (see the module docstring for the layouts and checks).

    Args beyond the shared ones: ``root``, ``val_fraction``/``test_fraction``/``split_seed`` (one-folder
    layout only), ``check_files`` (read every file's header during setup).
    """

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        check_files: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("image_size", "backbone")
        super().__init__(**kwargs)
        if not 0.0 < float(val_fraction) < 1.0:
            raise UserError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if not 0.0 <= float(test_fraction) < 1.0 or float(val_fraction) + float(test_fraction) >= 1.0:
            raise UserError(
                f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got {test_fraction}"
            )
        check_int("split_seed", split_seed, 0)
        self.root = str(root)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = split_seed
        self.check_files = bool(check_files)
        self.layout = ""

    def _split_data(self, files_by_class: dict[str, list[Path]]) -> SplitData:
        index = {name: i for i, name in enumerate(self.class_names)}
        files = [f for name in files_by_class for f in files_by_class[name]]
        labels = np.asarray(
            [index[name] for name in files_by_class for _ in files_by_class[name]], dtype=np.int64
        )
        sizes = {image_size(f) for f in files} if self.check_files else set()
        return SplitData(files, labels, sizes)

    def _load_splits(self) -> dict[str, SplitData]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(f"data.root={root} does not exist: give the folder that holds your class folders")
        if (root / "train").is_dir():
            return self._load_split_folders(root)
        return self._load_one_folder(root)

    def _load_split_folders(self, root: Path) -> dict[str, SplitData]:
        self.layout = "train/val folders"
        train = scan_class_folders(root / "train")
        if not (root / "val").is_dir():
            raise UserError(
                f"{root} has train/ but no val/: add {root}/val/<class>/ images (or put all classes directly in {root})"
            )
        self.class_names = sorted(train)
        named = {"train": train, "val": scan_class_folders(root / "val")}
        if (root / "test").is_dir():
            named["test"] = scan_class_folders(root / "test")
        for split in ("val", "test"):
            if split not in named:
                continue
            unknown = sorted(set(named[split]) - set(train))
            if unknown:
                raise UserError(
                    f"class {unknown[0]!r} of {root / split} has no folder in {root / 'train'}: add it there or remove it"
                )
        missing = sorted(set(train) - set(named["val"]))
        if missing:
            raise UserError(
                f"class {missing[0]!r} has no images in {root / 'val'}: add {root / 'val' / missing[0]}/ with a few images"
            )
        splits = {split: self._split_data(files) for split, files in named.items()}
        if "test" not in splits:
            log.warning("no %s folder: the val images are also used as the test set", root / "test")
            splits["test"] = splits["val"]
        return splits

    def _load_one_folder(self, root: Path) -> dict[str, SplitData]:
        self.layout = "one folder, split by ratio"
        by_class = scan_class_folders(root)
        self.class_names = sorted(by_class)
        need = 3 if self.test_fraction > 0 else 2
        for name, files in by_class.items():
            if len(files) < need:
                raise UserError(
                    f"class {name!r} has {len(files)} image(s) in {root / name}; splitting into train/val"
                    f"{'/test' if need == 3 else ''} needs at least {need}"
                )
        data = self._split_data(by_class)
        rest, test = stratified_split(data.labels, self.test_fraction, self.split_seed)
        rest_data = subset(data, rest)
        val_share = self.val_fraction / (1.0 - self.test_fraction)
        kept, val = stratified_split(rest_data.labels, val_share, self.split_seed + 1)
        val_data = subset(rest_data, val)
        return {
            "train": subset(rest_data, kept),
            "val": val_data,
            "test": subset(data, test) if self.test_fraction > 0 else val_data,
        }
