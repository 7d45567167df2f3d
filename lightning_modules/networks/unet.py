"""A small UNet for denoising: ``levels`` poolings, widths doubling per level, skip connections."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.networks._checks import check_channels
from lightning_modules.networks._padding import crop_to, pad_to_multiple


def _double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    """Two 3x3 conv-[BN]-ReLU blocks, the basic UNet stage."""
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Small UNet denoiser.

    Encoder stage ``i`` has ``base_width * 2**i`` channels; ``levels`` max-poolings (stride ``2**levels``),
    transposed-conv upsampling and concatenated skips. With ``residual=True`` the net predicts the noise and
    returns ``x - noise``. Any H x W is accepted (reflect-padded to a multiple of ``2**levels``, then
    cropped back).
    """

    def __init__(
        self,
        channels: int = 1,
        base_width: int = 32,
        levels: int = 3,
        batch_norm: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_channels(channels)
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        self.channels = channels
        self.residual = residual
        self.stride = 2**levels
        widths = [base_width * 2**i for i in range(levels + 1)]
        self.inc = _double_conv(channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(_double_conv(widths[i], widths[i + 1], batch_norm) for i in range(levels))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(levels))
        )
        self.up_convs = nn.ModuleList(
            _double_conv(2 * widths[i], widths[i], batch_norm) for i in reversed(range(levels))
        )
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Denoise a (B, C, H, W) batch; returns (B, C, H, W) (not clamped)."""
        xp, size = pad_to_multiple(x, self.stride)
        h = self.inc(xp)
        skips = [h]
        for down in self.downs:
            h = down(self.pool(h))
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            h = conv(torch.cat([up(h), skips.pop()], dim=1))
        out = crop_to(self.out(h), size)
        return x - out if self.residual else out
