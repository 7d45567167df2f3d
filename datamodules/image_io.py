"""Read and write image files losslessly (8-bit and 16-bit, gray and RGB) and convert them to/from float.

* ``read_image`` returns the pixels as stored: ``(H, W)`` or ``(H, W, 3)`` numpy arrays of dtype uint8 or
  uint16 (alpha channels are dropped, 1-bit images become 0/255 uint8). TIFF files go through ``tifffile``
  (first page of a multi-page file), everything else through Pillow. Pillow silently reduces 16-bit colour
  PNGs to 8 bits, so those (and 16-bit gray+alpha PNGs) are decoded by ``imagecodecs`` (libpng).
* ``write_image`` keeps the dtype: 8-bit gray/RGB for png, tif, tiff, bmp, jpg, jpeg; 16-bit gray/RGB for
  png, tif and tiff (16-bit RGB PNGs are encoded by ``imagecodecs``, Pillow cannot write them). Files are
  written atomically. EXIF orientation tags are not applied when reading (pixels are used as stored).
* ``to_float`` / ``from_float`` map uint8 (÷255) and uint16 (÷65535) to float32 in [0, 1] and back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from imagelab.core.atomic import atomic_write
from imagelab.core.errors import UserError, first_line

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File name endings (compared case-insensitively) that ``list_images`` picks up."""

_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ext_list() -> str:
    return ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """All image files under ``root`` (recursive), sorted by relative path; hidden files/folders are skipped.

    Raises UserError when ``root`` is not a folder or contains no file with one of ``IMAGE_EXTENSIONS``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; create it or point the config at your images")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(path)
    if not found:
        raise UserError(f"no images found in {root} (searched recursively for extensions {_ext_list()})")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# --------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image as stored: ``(H, W)`` or ``(H, W, 3)``, dtype uint8 or uint16, alpha dropped.

    Raises UserError naming the file when it is missing, unreadable, corrupt or of an unsupported pixel type.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image file {path} does not exist")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = _read_tiff(path)
        else:
            header = _png_header(path)
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
                array = imagecodecs.png_decode(path.read_bytes())
            else:
                array = _read_pillow(path)
    except UserError:
        raise
    except Exception as exc:  # any decoder failure means the file is unusable
        raise UserError(f"cannot read image {path}: {first_line(exc)}; replace or remove the file") from exc
    return _normalise(array, path)


def _normalise(array: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a decoded array to (H, W) or (H, W, 3) uint8/uint16 (drop alpha, map bool to 0/255)."""
    if array.ndim == 3:
        channels = array.shape[2]
        if channels in (1, 2):  # gray, gray + alpha
            array = array[:, :, 0]
        elif channels in (3, 4):  # RGB, RGB + alpha
            array = array[:, :, :3]
        else:
            raise UserError(f"cannot read image {path}: {channels} channels (expected gray or RGB)")
    elif array.ndim != 2:
        raise UserError(f"cannot read image {path}: array of shape {array.shape} is not a 2-D image")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "u" and array.dtype.itemsize == 1:
        array = array.astype(np.uint8, copy=False)
    elif array.dtype.kind == "u" and array.dtype.itemsize == 2:
        array = array.astype(np.uint16, copy=False)
    elif array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # e.g. Pillow mode "I" holding 16-bit data
    else:
        raise UserError(
            f"cannot read image {path}: pixel type {array.dtype} is not supported (use 8- or 16-bit images)"
        )
    return np.ascontiguousarray(array)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        axes = page.axes
    if axes.startswith("S") and array.ndim == 3:  # planar configuration: samples first
        array = np.moveaxis(array, 0, -1)
    return array


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("P", "PA"):
            im = im.convert("RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "F":
            raise UserError(f"cannot read image {path}: floating-point images are not supported")
        array = np.array(im)
    if mode.startswith("I;16"):
        array = array.astype(np.uint16)
    return array


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None when the file is not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


# --------------------------------------------------------------------------------------------- writing


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8/uint16 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` array atomically, keeping its dtype.

    The format follows the extension: png, tif/tiff (8 or 16 bit), jpg/jpeg/bmp (8 bit only; jpeg is lossy).
    Raises UserError for an unsupported extension or a 16-bit image in an 8-bit-only format.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"write_image needs uint8 or uint16 pixels, got {array.dtype} (use from_float first)"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"write_image needs an (H, W) or (H, W, 3) array, got shape {array.shape}")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserError(f"cannot write {path}: unsupported extension; use one of {_ext_list()}")
    if ext in _EIGHT_BIT_ONLY and array.dtype == np.uint16:
        raise UserError(f"cannot write 16-bit image {path}: {ext} is 8-bit only; use .png or .tif")
    array = np.ascontiguousarray(array)

    def writer(tmp: str) -> None:
        if ext in (".tif", ".tiff"):
            tifffile.imwrite(tmp, array, photometric="rgb" if array.ndim == 3 else "minisblack")
        elif ext == ".png" and array.dtype == np.uint16 and array.ndim == 3:
            Path(tmp).write_bytes(imagecodecs.png_encode(array))
        else:
            fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}[ext]
            extra: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {}
            Image.fromarray(array).save(tmp, format=fmt, **extra)

    return atomic_write(path, writer)


# --------------------------------------------------------------------------------------------- conversion


def _max_value(dtype: Any) -> float:
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise ValueError(f"expected uint8 or uint16, got {dtype}")


def to_float(array: np.ndarray) -> np.ndarray:
    """uint8 (÷255) or uint16 (÷65535) pixels -> float32 in [0, 1]; bool -> 0/1; float input is cast only."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    return (array.astype(np.float32) / np.float32(_max_value(array.dtype))).astype(np.float32, copy=False)


def from_float(x: Any, dtype: Any = np.uint8) -> np.ndarray:
    """Float image in [0, 1] (numpy array or torch tensor) -> uint8/uint16 by scaling, rounding, clipping."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    top = _max_value(dtype)
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    return np.clip(np.rint(x * top), 0, top).astype(dtype)
