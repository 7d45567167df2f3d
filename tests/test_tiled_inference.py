"""Tiled inference: identity stays identity, conv nets match whole-image output, small images go whole."""

from __future__ import annotations

import pytest
import torch

from imagelab.core.errors import UserError
from lightning_modules.networks.dncnn import DnCNN
from lightning_modules.tiled_inference import denoise_tiled


@pytest.mark.parametrize(("shape", "tile", "overlap"), [((1, 150, 170), 64, 16), ((3, 97, 300), 40, 13)])
def test_identity_function_gives_the_input_back(shape: tuple[int, int, int], tile: int, overlap: int) -> None:
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    calls = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x.clone()

    out = denoise_tiled(identity, image, tile=tile, overlap=overlap)
    assert out.shape == image.shape and out.dtype == image.dtype
    torch.testing.assert_close(out, image, atol=1e-6, rtol=0)
    assert len(calls) > 4 and all(c[-2] <= tile and c[-1] <= tile for c in calls)


def test_per_tile_offsets_are_cross_faded_without_seams() -> None:
    # one row of tiles, each adding its index as an offset: a hard seam would jump by 1 between two pixels;
    # the cosine cross-fade over overlap // 2 = 16 pixels limits the jump to about pi / 2 / 16 ~= 0.1
    image = torch.zeros(1, 64, 200)
    counter = iter(range(100))

    def offset(x: torch.Tensor) -> torch.Tensor:
        return x + float(next(counter))

    out = denoise_tiled(offset, image, tile=64, overlap=32)
    row = out[0, 0]
    steps = row.diff()
    assert (steps >= -1e-6).all()  # offsets grow left to right, so does the blend
    assert steps.max() < 0.15
    assert row[0] == 0 and row[-1] == 5  # 6 tiles (starts 0, 32, 64, 96, 128, 136); borders untouched
    counter = iter(range(100))
    hard = denoise_tiled(offset, image, tile=64, overlap=0)
    assert hard[0, 0].diff().max() >= 1.0  # without overlap the tiles do show seams


def test_conv_net_tiled_matches_whole_image_output() -> None:
    torch.manual_seed(0)
    # DnCNN with 4 layers of 3x3 convs: receptive-field radius 4 <= overlap // 4 = 8, so tiling is exact
    net = DnCNN(channels=1, depth=4, width=8).eval()
    torch.nn.init.normal_(net.last_conv.weight, std=0.1)
    image = torch.rand(1, 150, 170)
    with torch.no_grad():
        whole = net(image[None])[0]
    tiled = denoise_tiled(net, image, tile=64, overlap=32)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    # sanity of the check itself: tiles without overlap do show seams for this net
    naive = denoise_tiled(net, image, tile=64, overlap=0)
    assert (naive - whole).abs().max() > 1e-3


def test_small_image_goes_through_whole() -> None:
    shapes = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return 1 - x

    image = torch.rand(3, 50, 64)
    out = denoise_tiled(fn, image, tile=64, overlap=8)
    assert shapes == [(1, 3, 50, 64)]
    torch.testing.assert_close(out, 1 - image)


@pytest.mark.parametrize(("tile", "overlap"), [(32, 32), (0, 0), (32, -1)])
def test_bad_tile_settings_are_user_errors(tile: int, overlap: int) -> None:
    with pytest.raises(UserError):
        denoise_tiled(lambda x: x, torch.rand(1, 100, 100), tile=tile, overlap=overlap)


def test_batched_input_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"\(C, H, W\)"):
        denoise_tiled(lambda x: x, torch.rand(1, 1, 100, 100))
