"""GPU-resident data (run here on the CPU device): same batch statistics and eval data as the loader path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datamodules.clean_sources import load_skimage_photo
from datamodules.denoising import DenoisingDataModule
from datamodules.device_store import DeviceImageStore
from datamodules.gpu_resident import GPUResidentDenoisingDataModule
from datamodules.gpu_resident_cifar10 import GPUResidentCIFAR10ClassificationDataModule
from datamodules.image_io import write_image
from imagelab.core.errors import UserError

SPLIT = {"train": ["brick", "chelsea", "coffee", "grass"], "val": ["moon", "camera"], "test": ["astronaut"]}
PHOTOS = {"_target_": "datamodules.clean_sources.SkimagePhotos", "images": SPLIT}


def _fake_trainer(rank: int, world: int) -> SimpleNamespace:
    return SimpleNamespace(
        global_rank=rank, world_size=world, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )


def _pair(channels: int, **extra):
    kwargs = dict(source=PHOTOS, channels=channels, patch_size=24, batch_size=64, eval_crop=96, **extra)
    torch.manual_seed(0)
    return GPUResidentDenoisingDataModule(device="cpu", **kwargs), DenoisingDataModule(**kwargs)


def _stats(batches) -> dict[str, float]:
    noisy = torch.cat([n for n, _ in batches])
    clean = torch.cat([c for _, c in batches])
    return {
        "mean": clean.mean().item(),
        "std": clean.std().item(),
        "patch_mean_std": clean.mean(dim=(1, 2, 3)).std().item(),
        "noise_std": (noisy - clean).std().item() * 255,
        "noise_mean": (noisy - clean).mean().item() * 255,
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_denoising_batches_match_the_loader_path(channels: int) -> None:
    resident, loader = _pair(channels, patches_per_epoch=3072)
    res = list(resident.train_dataloader())
    ref = list(loader.train_dataloader())
    assert [tuple(n.shape) for n, _ in res] == [tuple(n.shape) for n, _ in ref]
    assert res[0][0].dtype == torch.float32 and res[0][0].device.type == "cpu"
    a, b = _stats(res), _stats(ref)
    assert a["mean"] == pytest.approx(b["mean"], abs=0.015)
    assert a["std"] == pytest.approx(b["std"], abs=0.01)
    assert a["patch_mean_std"] == pytest.approx(b["patch_mean_std"], abs=0.015)
    assert a["noise_std"] == pytest.approx(25.0, abs=0.3) and b["noise_std"] == pytest.approx(25.0, abs=0.3)
    assert abs(a["noise_mean"]) < 0.3
    # val/test: the very same tensors as the loader path (same crops, same seeded noise)
    for split in ("val", "test"):
        got = list(getattr(resident, f"{split}_dataloader")())
        want = list(getattr(loader, f"{split}_dataloader")())
        assert len(got) == len(want)
        for (n1, c1), (n2, c2) in zip(got, want, strict=True):
            assert torch.equal(n1, n2) and torch.equal(c1, c2)


def test_patches_are_crops_of_the_images_in_all_eight_orientations() -> None:
    image = np.arange(20 * 30, dtype=np.int64).reshape(20, 30) % 251
    store = DeviceImageStore([image.astype(np.uint8), (255 - image).astype(np.uint8)], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    windows = store.random_windows(400, 5, g)
    patches = store.gather(windows, 5)[:, 0].numpy()
    seen = set()
    for k in range(400):
        source = image if int(windows["image"][k]) == 0 else 255 - image
        top, left = int(windows["top"][k]), int(windows["left"][k])
        crop = source[top : top + 5, left : left + 5]
        variants = [np.rot90(v, t) for v in (crop, crop[:, ::-1]) for t in range(4)]
        match = [i for i, v in enumerate(variants) if np.array_equal(v, patches[k])]
        assert len(match) == 1, "every patch is one flip/rotation of its window"
        seen.add(match[0])
    assert seen == set(range(8))
    assert int(windows["top"].max()) <= 15 and int(windows["left"].max()) <= 25


def test_epochs_ranks_sigma_range_and_paired(tmp_path: Path) -> None:
    resident, _ = _pair(
        1,
        patches_per_epoch=256,
        noise={"_target_": "datamodules.noise.GaussianNoise", "sigma_range": [5, 50]},
    )
    loader = resident.train_dataloader()
    loader.set_epoch(2)
    first = list(loader)
    loader.set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, list(loader), strict=True))
    loader.set_epoch(3)
    assert not torch.equal(first[0][0], next(iter(loader))[0])
    noisy, clean = first[0]
    sigmas = ((noisy - clean).flatten(1).std(dim=1) * 255).numpy()
    assert sigmas.min() < 15 and sigmas.max() > 40  # one sigma per patch, drawn from the range
    # DDP: patches_per_epoch is shared; eval images split without duplicates
    ranks = []
    for rank in range(2):
        torch.manual_seed(0)
        dm = GPUResidentDenoisingDataModule(
            device="cpu",
            source=PHOTOS,
            patch_size=24,
            batch_size=16,
            patches_per_epoch=100,
            eval_crop=64,
        )
        dm.trainer = _fake_trainer(rank, 2)  # type: ignore[assignment]
        ranks.append(dm)
    assert [len(dm.train_dataloader()) for dm in ranks] == [4, 4]  # 50 patches each: 16 + 16 + 16 + 2
    assert [len(b[0]) for b in ranks[0].train_dataloader()] == [16, 16, 16, 2]
    assert not torch.equal(
        next(iter(ranks[0].train_dataloader()))[1], next(iter(ranks[1].train_dataloader()))[1]
    )
    assert [len(list(dm.val_dataloader())) for dm in ranks] == [1, 1]
    # real noisy/clean pairs: the same window of both images
    for i in range(4):
        clean = load_skimage_photo("coffee")[i * 30 : i * 30 + 60, i * 40 : i * 40 + 80]
        write_image(tmp_path / "clean" / f"img_{i}.png", clean)
        write_image(tmp_path / "noisy" / f"img_{i}.png", 255 - clean)
    paired = GPUResidentDenoisingDataModule(
        device="cpu", channels=3, noise=None, patch_size=20, patches_per_epoch=32, batch_size=16, eval_crop=40,
        source={"_target_": "datamodules.file_sources.PairedFolders", "root": str(tmp_path),
                "val_fraction": 0.25, "test_fraction": 0.25},
    )  # fmt: skip
    for noisy, clean in paired.train_dataloader():
        torch.testing.assert_close(noisy, 1 - clean, atol=1e-6, rtol=0)


def test_trains_through_the_framework(tmp_path: Path) -> None:
    from tests.helpers.in_process import train_in_process
    from tests.helpers.overrides import ONE_EPOCH_DENOISE
    from tests.helpers.runs import psnr_gain

    result = train_in_process(tmp_path, "data=denoise_photos_gpu", *ONE_EPOCH_DENOISE)
    assert result["trainer"].global_step == 4
    assert psnr_gain(result["metrics"]) > 0.1, result["metrics"]  # 4 steps from the identity: 0.2-0.3 dB


def _cifar(tmp_path: Path) -> None:
    from datamodules.cifar10_reader import write_cifar10_like

    rng = np.random.default_rng(0)
    # structured images: a per-class colour plus texture, so channel statistics are not uniform noise
    labels = np.arange(300) % 10
    base = rng.integers(40, 220, (10, 1, 1, 3))
    train = np.clip(base[labels] + rng.normal(0, 30, (300, 32, 32, 3)), 0, 255).astype(np.uint8)
    train[:, :, :8] = 255  # a bright band on the left: flips and crops move it
    test = train[:50].copy()
    write_cifar10_like(tmp_path, train, labels, test, labels[:50], [f"c{i}" for i in range(10)])


@pytest.mark.slow
@pytest.mark.parametrize("channels", [3, 1])
def test_cifar10_classification_batches_match_the_loader_path(tmp_path: Path, channels: int) -> None:
    from datamodules.cifar10_classification import CIFAR10ClassificationDataModule

    _cifar(tmp_path)
    kwargs = dict(root=str(tmp_path), download=False, val_size=50, batch_size=25, eval_batch_size=16,
                  channels=channels, mean=[0.5] * channels, std=[0.25] * channels)  # fmt: skip
    resident = GPUResidentCIFAR10ClassificationDataModule(device="cpu", **kwargs)
    loader = CIFAR10ClassificationDataModule(**kwargs)
    resident.setup()
    loader.setup()
    epochs = [list(resident.train_dataloader()) for _ in range(6)]
    ref = [list(loader.train_dataloader()) for _ in range(6)]
    x_res = torch.cat([x for epoch in epochs for x, _ in epoch])
    x_ref = torch.cat([x for epoch in ref for x, _ in epoch])
    assert x_res.shape == x_ref.shape == (1500, channels, 32, 32)
    # per channel, and per image column: crops and flips spread the bright band over the columns in the same
    # way (a missing flip or crop shifts some column means by ~1; sampling noise is ~0.04)
    for dims, atol in (((0, 2, 3), 0.03), ((0, 1, 2), 0.15)):
        torch.testing.assert_close(x_res.mean(dim=dims), x_ref.mean(dim=dims), atol=atol, rtol=0)
        torch.testing.assert_close(x_res.std(dim=dims), x_ref.std(dim=dims), atol=atol, rtol=0)
    labels = torch.cat([y for _, y in epochs[0]])
    assert sorted(labels.tolist()) == sorted(int(v) for v in loader.splits["train"].labels)  # a permutation
    for split in ("val", "test"):
        got = list(getattr(resident, f"{split}_dataloader")())
        want = list(getattr(loader, f"{split}_dataloader")())
        for (x1, y1), (x2, y2) in zip(got, want, strict=True):
            assert torch.equal(y1, y2)
            torch.testing.assert_close(x1, x2, atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="augment=none or crop_flip"):
        GPUResidentCIFAR10ClassificationDataModule(device="cpu", augment="strong", **kwargs)
