"""The seed article's small convolutional denoising autoencoder (two poolings down, two upsamplings up)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_modules.networks._checks import check_channels
from lightning_modules.networks._padding import crop_to, pad_to_multiple


class ConvAutoencoder(nn.Module):
    """Conv encoder/decoder that maps a noisy image to a clean one in [0, 1] (sigmoid output).

    Layout (``widths`` = (w0, w1, w2), default 32 everywhere)::

        conv(w0)-ReLU-maxpool  conv(w1)-ReLU-maxpool  conv(w2)-ReLU          (encoder, stride 4)
        upsample x2  conv(w1)-ReLU  ConvTranspose(w0, stride 2)-ReLU  conv(C)  sigmoid   (decoder)

    Any H x W is accepted: the input is reflect-padded to a multiple of 4 and the output cropped back.
    """

    stride = 4

    def __init__(self, channels: int = 1, widths: Sequence[int] = (32, 32, 32)) -> None:
        super().__init__()
        check_channels(channels)
        widths = [int(w) for w in widths]
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be 3 positive ints (one per encoder conv), got {widths}")
        w0, w1, w2 = widths
        self.channels = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w0, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w0, w1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w2, w1, 3, padding=1),
            nn.ReLU(inplace=True),
            # kernel 4, stride 2, padding 1 doubles H and W exactly
            nn.ConvTranspose2d(w1, w0, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w0, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Denoise a (B, C, H, W) batch; returns (B, C, H, W) in [0, 1]."""
        x, size = pad_to_multiple(x, self.stride)
        out = torch.sigmoid(self.decoder(self.encoder(x)))
        return crop_to(out, size)
