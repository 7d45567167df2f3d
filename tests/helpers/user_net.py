"""A user's own denoising network, defined outside the framework: ``model.net._target_=tests.helpers.user_net.TinyNet``."""

from __future__ import annotations

from torch import Tensor, nn


class TinyNet(nn.Module):
    """Two 3x3 convs predicting the noise, subtracted from the input (a residual denoiser, ~1k parameters)."""

    def __init__(self, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1)
        )
        nn.init.zeros_(self.body[-1].weight)  # starts as the identity: any learning shows as a PSNR gain
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` minus the predicted noise."""
        return x - self.body(x)
