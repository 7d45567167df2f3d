"""Lossless 8/16-bit image reading and writing, folder listing and float conversion (datamodules.image_io)."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from datamodules.image_io import from_float, list_images, read_image, to_float, write_image
from imagelab.core.errors import UserError

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".bmp"])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)])
def test_round_trip_8bit(tmp_path, ext, shape):
    image = _random(shape, np.uint8)
    path = write_image(tmp_path / f"img{ext}", image)
    back = read_image(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("ext", [".png", ".tif", ".TIFF"])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)])
def test_round_trip_16bit(tmp_path, ext, shape):
    image = _random(shape, np.uint16)
    image.flat[0], image.flat[1] = 0, 65535  # full range, incl. values that 8-bit would lose
    path = write_image(tmp_path / f"img{ext}", image)
    back = read_image(path)
    assert back.dtype == np.uint16 and back.shape == shape
    np.testing.assert_array_equal(back, image)


def test_jpeg_is_8bit_and_close(tmp_path):
    image = np.full((16, 16, 3), 120, np.uint8)
    back = read_image(write_image(tmp_path / "a.jpg", image))
    assert back.dtype == np.uint8 and back.shape == (16, 16, 3)
    assert np.abs(back.astype(int) - 120).max() <= 3
    with pytest.raises(UserError, match="8-bit only"):
        write_image(tmp_path / "b.jpg", image.astype(np.uint16))


@pytest.mark.parametrize("filter_type", [0, 8, 16, 32, 64, 128])
@pytest.mark.parametrize("channels", [3, 4])
def test_png16_colour_read_with_every_row_filter(tmp_path, filter_type, channels):
    """16-bit colour PNGs (which Pillow reduces to 8 bits) are read exactly, whatever row filter the writer
    chose (libpng's none/sub/up/avg/paeth flags; 0 = libpng's adaptive choice); alpha is dropped."""
    image = _random((9, 11, channels), np.uint16)
    path = tmp_path / "x.png"
    path.write_bytes(imagecodecs.png_encode(image, filter=filter_type))
    np.testing.assert_array_equal(read_image(path), image[:, :, :3])


def test_png16_written_by_write_image_is_a_standard_png(tmp_path):
    """A 16-bit RGB PNG from write_image is a valid PNG of bit depth 16 for another decoder too: Pillow (which
    reduces it to 8 bits) sees the high bytes of the written values."""
    from PIL import Image

    image = _random((7, 5, 3), np.uint16)
    path = write_image(tmp_path / "w.png", image)
    assert path.read_bytes()[24] == 16  # IHDR bit depth
    with Image.open(path) as im:
        eight_bit = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(eight_bit, (image >> 8).astype(np.uint8))


def test_alpha_dropped_and_planar_tiff(tmp_path):
    import tifffile

    rgba = _random((6, 7, 4), np.uint8)
    from PIL import Image

    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])
    planar = _random((3, 6, 7), np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), planar.transpose(1, 2, 0))


def test_corrupt_and_missing_files_raise_user_error(tmp_path):
    good = write_image(tmp_path / "good.png", _random((32, 32, 3), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:60])  # truncated
    with pytest.raises(UserError, match=r"bad\.png"):
        read_image(bad)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff")
    with pytest.raises(UserError, match=r"junk\.tif"):
        read_image(junk)
    png16 = tmp_path / "c16.png"
    png16.write_bytes(imagecodecs.png_encode(_random((8, 8, 3), np.uint16))[:-30])
    with pytest.raises(UserError, match=r"c16\.png"):
        read_image(png16)
    with pytest.raises(UserError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")


def test_list_images(tmp_path):
    img = _random((4, 4), np.uint8)
    write_image(tmp_path / "b.PNG", img)
    write_image(tmp_path / "sub" / "a.jpg", img)
    write_image(tmp_path / "c.tiff", img)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    found = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["b.PNG", "c.tiff", "sub/a.jpg"]


def test_list_images_errors_name_folder_and_extensions(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"empty.*png, jpg, jpeg, tif, tiff, bmp"):
        list_images(tmp_path / "empty")
    with pytest.raises(UserError, match="missing"):
        list_images(tmp_path / "missing")


def test_write_is_atomic_and_checks_input(tmp_path):
    with pytest.raises(ValueError):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    with pytest.raises(UserError, match="extension"):
        write_image(tmp_path / "f.gif", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_float_conversion():
    u8 = np.array([0, 1, 128, 255], np.uint8)
    u16 = np.array([0, 1, 32768, 65535], np.uint16)
    f8, f16 = to_float(u8), to_float(u16)
    assert f8.dtype == np.float32 and f16.dtype == np.float32
    np.testing.assert_allclose(f8, u8 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(f16, u16 / 65535.0, rtol=1e-6)
    np.testing.assert_array_equal(from_float(f8, np.uint8), u8)
    np.testing.assert_array_equal(from_float(f16, np.uint16), u16)
    np.testing.assert_array_equal(
        from_float(np.array([-0.5, 0.5, 1.7, np.nan]), np.uint8), np.array([0, 128, 255, 0], np.uint8)
    )
