"""``DeviceImageStore``: images of different sizes in one flat integer tensor on the device, cut into randomly
placed and oriented patches for a whole batch with one gather (the GPU-resident denoising data path)."""

from __future__ import annotations

import numpy as np
import torch

from imagelab.core.errors import UserError

RGB_TO_GRAY = (0.2125, 0.7154, 0.0721)
"""Luminance weights of ``skimage.color.rgb2gray`` (what the loader path uses for channels=1)."""


class DeviceImageStore:
    """Images of different sizes in one flat pixel tensor on ``device``, cut into patches in batches.

    Pixels keep their stored integer values (uint8, or int32 for 16-bit sources, scaled to 16 bits) in
    H x W x C order; ``channels_stored`` is 3 when any image is colour (gray images are then repeated), else 1.
    Windows are drawn from the first ``sampled`` images (default all); the others can be read with the same
    windows shifted by an image offset (the real noisy partners of paired data).
    """

    def __init__(self, arrays: list[np.ndarray], device: torch.device, sampled: int | None = None) -> None:
        if not arrays:
            raise UserError("no training images to put on the device")
        self.sampled = len(arrays) if sampled is None else sampled
        deep = any(a.dtype == np.uint16 for a in arrays)
        bad = sorted({str(a.dtype) for a in arrays if a.dtype not in (np.uint8, np.uint16)})
        if bad:
            raise UserError(
                f"GPU-resident data needs 8- or 16-bit images, got {', '.join(bad)}; use the loader"
            )
        self.channels_stored = 3 if any(a.ndim == 3 for a in arrays) else 1
        self.scale = 65535.0 if deep else 255.0
        flat, offsets, heights, widths = [], [], [], []
        position = 0
        for array in arrays:
            a = array.astype(np.int32) * 257 if deep and array.dtype == np.uint8 else array
            if a.ndim == 2:
                a = a[:, :, None]
            if a.shape[2] != self.channels_stored:
                a = np.repeat(a, self.channels_stored, axis=2)
            offsets.append(position)
            heights.append(a.shape[0])
            widths.append(a.shape[1])
            flat.append(np.ascontiguousarray(a).reshape(-1))
            position += a.size
        buffer = np.concatenate(flat).astype(np.int32 if deep else np.uint8, copy=False)
        self.device = device
        self.pixels = torch.from_numpy(buffer).to(device)
        self.offsets = torch.tensor(offsets, dtype=torch.int64, device=device)
        self.heights = torch.tensor(heights, dtype=torch.int64, device=device)
        self.widths = torch.tensor(widths, dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data on the device."""
        return self.pixels.numel() * self.pixels.element_size()

    def random_windows(self, count: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw ``count`` (image, top, left, orientation) uniformly, as the loader path does per sample."""
        dev = self.device
        image = torch.randint(self.sampled, (count,), generator=generator, device=dev)
        u = torch.rand((2, count), generator=generator, device=dev, dtype=torch.float64)
        top = (u[0] * (self.heights[image] - size + 1)).floor().long()
        left = (u[1] * (self.widths[image] - size + 1)).floor().long()
        orientation = torch.randint(8, (count,), generator=generator, device=dev)
        return {"image": image, "top": top, "left": left, "orientation": orientation}

    def gather(self, windows: dict[str, torch.Tensor], size: int, image_offset: int = 0) -> torch.Tensor:
        """(count, channels_stored, size, size) integer patches of ``windows`` of images ``image + offset``.

        Orientation bits: 1 = transpose, 2 = flip rows, 4 = flip columns: the 8 elements of the square's
        symmetry group, the same set as the loader's flip x rot90.
        """
        dev = self.device
        image, orientation = windows["image"] + image_offset, windows["orientation"]
        count, c = len(image), self.channels_stored
        i = torch.arange(size, device=dev).view(1, size, 1)
        j = torch.arange(size, device=dev).view(1, 1, size)
        transpose = (orientation & 1).bool().view(count, 1, 1)
        flip_rows = (orientation & 2).bool().view(count, 1, 1)
        flip_cols = (orientation & 4).bool().view(count, 1, 1)
        rows = torch.where(transpose, j, i)
        cols = torch.where(transpose, i, j)
        rows = torch.where(flip_rows, size - 1 - rows, rows) + windows["top"].view(count, 1, 1)
        cols = torch.where(flip_cols, size - 1 - cols, cols) + windows["left"].view(count, 1, 1)
        base = (
            self.offsets[image].view(count, 1, 1) + (rows * self.widths[image].view(count, 1, 1) + cols) * c
        )
        index = base.unsqueeze(1) + torch.arange(c, device=dev).view(1, c, 1, 1)
        return torch.take(self.pixels, index)

    def to_float(self, patches: torch.Tensor, channels: int) -> torch.Tensor:
        """Integer patches -> float32 in [0, 1] with ``channels`` channels (luminance or repetition)."""
        x = patches.float() / self.scale
        if channels == 1 and x.shape[1] == 3:
            weights = torch.tensor(RGB_TO_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()
