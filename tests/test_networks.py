"""Denoising networks: any H x W in, same shape out; residual DnCNN/UNet; bad ``model.net`` nodes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from imagelab.config.instantiation import build_instance
from imagelab.core.errors import UserError

TARGETS = {
    "dncnn": "lightning_modules.networks.dncnn.DnCNN",
    "unet": "lightning_modules.networks.unet.UNet",
    "conv_autoencoder": "lightning_modules.networks.conv_autoencoder.ConvAutoencoder",
}


def build_denoiser_net(cfg: dict) -> torch.nn.Module:
    """The network of a ``model.net`` node written with a short name instead of its ``_target_``."""
    options = dict(cfg)
    return build_instance(
        {"_target_": TARGETS[options.pop("name")], **options}, nn.Module, "model.net", "torch.nn.Module"
    )


SMALL_NETS = {
    "dncnn": {"depth": 4, "width": 8},
    "unet": {"base_width": 4, "levels": 3},
    "conv_autoencoder": {"widths": [4, 6, 8]},
}


@pytest.mark.parametrize("name", sorted(SMALL_NETS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(37, 53), (40, 40), (5, 3)])
def test_output_shape_equals_input_shape(name: str, channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = build_denoiser_net({"name": name, "channels": channels, **SMALL_NETS[name]}).eval()
    x = torch.rand(2, channels, *size)
    out = net(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_conv_autoencoder_output_is_in_unit_range_and_depends_on_input() -> None:
    torch.manual_seed(0)
    net = build_denoiser_net({"name": "conv_autoencoder", "channels": 3}).eval()
    x = torch.rand(1, 3, 37, 53)
    out = net(x)
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, net(torch.rand_like(x)))


def test_padding_does_not_leak_across_images_of_a_batch() -> None:
    torch.manual_seed(0)
    net = build_denoiser_net({"name": "unet", "channels": 1, "base_width": 4, "levels": 2}).eval()
    x = torch.rand(3, 1, 37, 53)
    torch.testing.assert_close(net(x)[1:2], net(x[1:2]))


def test_dncnn_residual_predicts_noise() -> None:
    torch.manual_seed(0)
    net = build_denoiser_net({"name": "dncnn", "channels": 1, "depth": 5, "width": 8}).eval()
    x = torch.rand(2, 1, 21, 17)
    # fresh residual DnCNN: last layer zero-initialised -> predicted noise 0 -> identity
    assert torch.count_nonzero(net.last_conv.weight) == 0
    torch.testing.assert_close(net(x), x)
    # with a non-zero last layer the output is x minus what the body predicts
    torch.nn.init.normal_(net.last_conv.weight, std=0.1)
    torch.nn.init.normal_(net.last_conv.bias, std=0.1)
    out = net(x)
    assert not torch.allclose(out, x, atol=1e-3)
    torch.testing.assert_close(out, x - net.body(x))
    # zeroing it again restores the identity
    torch.nn.init.zeros_(net.last_conv.weight)
    torch.nn.init.zeros_(net.last_conv.bias)
    torch.testing.assert_close(net(x), x)


def test_dncnn_without_residual_predicts_the_image_directly() -> None:
    torch.manual_seed(0)
    net = build_denoiser_net(
        {"name": "dncnn", "channels": 3, "depth": 3, "width": 8, "residual": False}
    ).eval()
    torch.nn.init.zeros_(net.last_conv.weight)
    torch.nn.init.zeros_(net.last_conv.bias)
    assert torch.count_nonzero(net(torch.rand(1, 3, 9, 9))) == 0


def test_dncnn_depth_and_batch_norm_flags_shape_the_network() -> None:
    with_bn = build_denoiser_net({"name": "dncnn", "depth": 6, "width": 8, "batch_norm": True})
    without = build_denoiser_net({"name": "dncnn", "depth": 6, "width": 8, "batch_norm": False})
    convs = [m for m in with_bn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules()) == 4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())


def test_unet_residual_zero_output_layer_is_identity() -> None:
    net = build_denoiser_net({"name": "unet", "channels": 1, "base_width": 4, "levels": 2}).eval()
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.zeros_(net.out.bias)
    x = torch.rand(1, 1, 19, 30)
    torch.testing.assert_close(net(x), x)


def test_node_accepts_dictconfig() -> None:
    cfg = OmegaConf.create({"_target_": TARGETS["conv_autoencoder"], "channels": 1, "widths": [4, 4, 4]})
    assert build_instance(cfg, nn.Module, "model.net", "torch.nn.Module")(torch.rand(1, 1, 8, 8)).shape == (
        1,
        1,
        8,
        8,
    )


def test_unknown_target_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.net"):
        build_instance(
            {"_target_": "lightning_modules.networks.resnet.ResNet9000"},
            nn.Module,
            "model.net",
            "torch.nn.Module",
        )


def test_node_without_target_names_the_preset_group() -> None:
    with pytest.raises(UserError, match=r"model/net=NAME \(conf/model/net/\)"):
        build_instance({"name": "dncnn", "channels": 1}, nn.Module, "model.net", "torch.nn.Module")


def test_target_that_is_no_module_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"must build a torch\.nn\.Module, got dict"):
        build_instance({"_target_": "builtins.dict", "a": 1}, nn.Module, "model.net", "torch.nn.Module")


def test_unknown_kwarg_names_it() -> None:
    with pytest.raises(UserError, match="levels"):
        build_denoiser_net({"name": "dncnn", "levels": 3})


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "dncnn", "depth": 1},
        {"name": "unet", "levels": 0},
        {"name": "conv_autoencoder", "widths": [8, 8]},
        {"name": "dncnn", "channels": 0},
        {"name": "dncnn", "channels": "rgb"},
    ],
)
def test_invalid_values_are_user_errors(cfg: dict) -> None:
    with pytest.raises(UserError):
        build_denoiser_net(cfg)
