"""DnCNN (Zhang et al., 2017): a plain stack of 3x3 convs, optionally predicting the noise (residual)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_modules.networks._checks import check_channels


class DnCNN(nn.Module):
    """DnCNN denoiser: conv-ReLU, (depth - 2) x conv-[BN]-ReLU, conv.

    With ``residual=True`` the last conv predicts the noise and the output is ``x - noise``; that last conv
    starts at zero, so the untrained net is the identity (training starts at the noisy input's PSNR and
    converges much faster). Otherwise it predicts the clean image directly. The net is fully convolutional
    with stride 1, so any H x W works unchanged. DnCNN-S is depth 17, width 64.
    """

    stride = 1

    def __init__(
        self,
        channels: int = 1,
        depth: int = 17,
        width: int = 64,
        batch_norm: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_channels(channels)
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (first and last conv), got {depth}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.channels = channels
        self.residual = residual
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if residual:
            # start as the identity (predicted noise 0): training then only improves on the noisy input
            nn.init.zeros_(self.last_conv.weight)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The final conv (predicts the noise when ``residual``); handy for initialisation and tests."""
        return self.body[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Denoise a (B, C, H, W) batch; returns (B, C, H, W) (not clamped)."""
        out = self.body(x)
        return x - out if self.residual else out
