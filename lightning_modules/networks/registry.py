"""Build a denoising network from a config dict such as ``{"name": "dncnn", "channels": 1, "depth": 10}``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from experiment_utils.errors import UserError
from experiment_utils.plain_config import plain_mapping
from lightning_modules.networks.conv_autoencoder import ConvAutoencoder
from lightning_modules.networks.dncnn import DnCNN
from lightning_modules.networks.unet import UNet

DENOISER_NETS: dict[str, type[nn.Module]] = {
    "conv_autoencoder": ConvAutoencoder,
    "dncnn": DnCNN,
    "unet": UNet,
}


def valid_kwargs(name: str) -> list[str]:
    """Names of the keyword arguments accepted by network ``name`` (besides ``name`` itself)."""
    params = inspect.signature(DENOISER_NETS[name].__init__).parameters
    return [p for p in params if p != "self"]


def build_denoiser_net(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate the denoising network named ``cfg["name"]`` with the remaining keys as keyword arguments.

    Raises UserError for a missing/unknown name, an unknown keyword, or an invalid value (e.g. depth < 2),
    with a one-line message listing what is valid.
    """
    kwargs = plain_mapping(cfg, "network")
    name = kwargs.pop("name", None)
    if name not in DENOISER_NETS:
        raise UserError(
            f"unknown network name {name!r} in model.net.name; "
            f"valid names: {', '.join(sorted(DENOISER_NETS))}"
        )
    allowed = valid_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for network {name!r} in model.net; "
            f"valid options: {', '.join(allowed)}"
        )
    channels = kwargs.get("channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UserError(
            f"model.net.channels must be a positive int (1 = grayscale, 3 = colour), got {channels!r}"
        )
    try:
        return DENOISER_NETS[name](**kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid options for network {name!r} in model.net: {exc}") from exc
