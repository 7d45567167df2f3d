"""DenoisingDataModule: split by image, shapes, fixed eval noise, folder/paired/CIFAR sources, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.clean_sources import DEFAULT_SKIMAGE_SPLIT, SKIMAGE_PHOTOS, load_skimage_photo
from datamodules.denoising import DenoisingDataModule
from datamodules.image_io import write_image
from imagelab.core.errors import UserError

SMALL = {"train": ["brick", "chelsea"], "val": ["moon"], "test": ["camera"]}


def photos(images: dict) -> dict:
    """A ``data.source`` node: these skimage photos."""
    return {"_target_": "datamodules.clean_sources.SkimagePhotos", "images": images}


def folder(root: Path, **kwargs) -> dict:
    """A ``data.source`` node: the images under ``root``."""
    return {"_target_": "datamodules.file_sources.FolderImages", "root": str(root), **kwargs}


def paired(root: Path, **kwargs) -> dict:
    """A ``data.source`` node: noisy/clean pairs under ``root``."""
    return {"_target_": "datamodules.file_sources.PairedFolders", "root": str(root), **kwargs}


def cifar10(root: Path, **kwargs) -> dict:
    """A ``data.source`` node: CIFAR-10 pickles under ``root`` (no download)."""
    return {
        "_target_": "datamodules.file_sources.CIFAR10Images",
        "root": str(root),
        "download": False,
        **kwargs,
    }


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(noisy.clone(), clean.clone()) for noisy, clean in loader]


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (n1, c1), (n2, c2) in zip(a, b, strict=True):
        assert torch.equal(n1, n2) and torch.equal(c1, c2)


def test_default_skimage_split_shapes_and_noise_level():
    dm = DenoisingDataModule(patch_size=40, batch_size=16, patches_per_epoch=64)
    dm.setup("fit")
    names = dm.image_names
    assert names == DEFAULT_SKIMAGE_SPLIT
    assert "camera" in names["test"]
    flat = [n for split in names.values() for n in split]
    assert len(flat) == len(set(flat))  # disjoint by image
    assert dm.channels == 1
    train = _batches(dm.train_dataloader())
    assert len(train) == 4
    noisy, clean = train[0]
    assert noisy.shape == clean.shape == (16, 1, 40, 40)
    assert noisy.dtype == clean.dtype == torch.float32
    assert clean.min() >= 0 and clean.max() <= 1
    val = _batches(dm.val_dataloader())
    test = _batches(dm.test_dataloader())
    assert len(val) == 2 and len(test) == 3
    assert all(n.shape == (1, 1, 256, 256) for n, _ in val + test)
    residual = torch.cat([(n - c).flatten() for n, c in val + test])
    assert abs(residual.std().item() * 255 - 25) < 0.5
    train_residual = torch.cat([(n - c).flatten() for n, c in train])
    assert abs(train_residual.std().item() * 255 - 25) < 1.0
    # plain hyper-parameters (checkpoints must load with weights_only=True)
    assert dm.hparams["noise"] is None and dm.hparams["source"] is None


def test_eval_batches_fixed_across_passes_and_instances_train_batches_fresh():
    kwargs = dict(source=photos(SMALL), patch_size=32, patches_per_epoch=8, batch_size=8, eval_crop=128)
    dm1 = DenoisingDataModule(**kwargs)
    dm1.setup("fit")
    first = _batches(dm1.val_dataloader())
    _assert_same(first, _batches(dm1.val_dataloader()))
    dm2 = DenoisingDataModule(**kwargs)
    dm2.setup("validate")
    _assert_same(first, _batches(dm2.val_dataloader()))
    _assert_same(_batches(dm1.test_dataloader()), _batches(dm2.test_dataloader()))
    other_seed = DenoisingDataModule(**kwargs, noise_seed=99)
    other_seed.setup()
    (n_other, c_other), (n_first, c_first) = _batches(other_seed.val_dataloader())[0], first[0]
    assert torch.equal(c_other, c_first) and not torch.equal(n_other, n_first)
    # val and test images of equal index get different noise
    test_noisy, test_clean = _batches(dm1.test_dataloader())[0]
    assert not torch.equal(first[0][0] - first[0][1], test_noisy - test_clean)
    a, b = _batches(dm1.train_dataloader()), _batches(dm1.train_dataloader())
    assert not torch.equal(a[0][0], b[0][0])  # fresh patches and noise every epoch


def test_setup_is_idempotent_and_loads_the_images_once(monkeypatch: pytest.MonkeyPatch):
    dm = DenoisingDataModule(source=photos(SMALL))
    loads = []
    load = dm.source.load
    monkeypatch.setattr(dm.source, "load", lambda: loads.append(1) or load())
    dm.setup("fit")
    datasets = dict(dm.datasets)
    dm.setup("test")
    dm.setup("validate")
    assert len(loads) == 1  # later stages reuse the images read (and split) by the first setup
    assert all(dm.datasets[k] is v for k, v in datasets.items())


def test_channels_conversion():
    gray = DenoisingDataModule(source=photos({"train": ["camera"], "val": ["chelsea"]}), eval_crop=64)
    gray.setup()
    from skimage.color import rgb2gray

    photo = load_skimage_photo("chelsea")
    top, left = (photo.shape[0] - 64) // 2, (photo.shape[1] - 64) // 2
    expected = rgb2gray(photo[top : top + 64, left : left + 64] / 255.0)
    _, clean = gray.datasets["val"][0]
    assert clean.shape == (1, 64, 64)
    np.testing.assert_allclose(clean[0].numpy(), expected, atol=1e-6)
    colour = DenoisingDataModule(
        source=photos({"train": ["chelsea"], "val": ["camera"]}), channels=3, eval_crop=64, patch_size=16
    )
    colour.setup()
    _, clean = colour.datasets["val"][0]
    assert clean.shape == (3, 64, 64)
    assert torch.equal(clean[0], clean[1]) and torch.equal(clean[1], clean[2])  # gray photo repeated
    noisy, clean = next(iter(colour.train_dataloader()))
    assert noisy.shape == (32, 3, 16, 16)
    assert not torch.equal(clean[:, 0], clean[:, 2])  # real colour


def test_skimage_and_argument_errors():
    with pytest.raises(UserError, match=r"unknown skimage image 'lena'.*camera"):
        DenoisingDataModule(source=photos({"train": ["lena"], "val": ["moon"]})).setup()
    with pytest.raises(UserError, match="both"):
        DenoisingDataModule(source=photos({"train": ["moon"], "val": ["moon"]})).setup()
    with pytest.raises(UserError, match=r"patch_size 600 is larger than training image"):
        DenoisingDataModule(source=photos(SMALL), patch_size=600).setup()
    with pytest.raises(UserError, match=r"data\.source must be a config node with a _target_"):
        DenoisingDataModule(source="imagenet")
    with pytest.raises(UserError, match=r"data\.source\.root is not set"):
        DenoisingDataModule(source=cifar10(Path("x")) | {"root": None})
    with pytest.raises(UserError, match="no_such_module"):
        DenoisingDataModule(source={"_target_": "no_such_module.Source"})
    with pytest.raises(UserError, match="not a CleanSource"):
        DenoisingDataModule(source={"_target_": "datamodules.noise.GaussianNoise", "sigma": 5})
    with pytest.raises(UserError, match="channels"):
        DenoisingDataModule(channels=2)
    with pytest.raises(UserError, match=r"data\.noise must be a config node with a _target_"):
        DenoisingDataModule(noise={"kind": "blur"})
    with pytest.raises(UserError, match=r"cannot build 'data\.noise'.*sigmaa"):
        DenoisingDataModule(noise={"_target_": "datamodules.noise.GaussianNoise", "sigmaa": 5})
    no_test = DenoisingDataModule(source=photos({"train": ["camera"], "val": ["moon"]}))
    no_test.setup()
    with pytest.raises(UserError, match="no test images"):
        no_test.test_dataloader()
    assert {"camera", "astronaut", "moon"} <= set(SKIMAGE_PHOTOS)


def _photo_folder(root: Path, n: int) -> list[Path]:
    """``n`` crops of skimage photos as 8-bit gray, 8-bit RGB and 16-bit gray PNG/TIFF files."""
    photo = load_skimage_photo("astronaut")
    paths = []
    for i in range(n):
        crop = photo[i * 40 : i * 40 + 64, i * 30 : i * 30 + 72]
        if i % 3 == 0:
            paths.append(write_image(root / f"rgb_{i}.png", crop))
        elif i % 3 == 1:
            paths.append(write_image(root / "sub" / f"gray_{i}.png", crop[:, :, 1]))
        else:
            paths.append(write_image(root / f"deep_{i}.tif", crop[:, :, 0].astype(np.uint16) * 257))
    return paths


def test_folder_source(tmp_path):
    paths = _photo_folder(tmp_path / "clean", 8)
    dm = DenoisingDataModule(
        source=folder(tmp_path / "clean", val_fraction=0.25, test_fraction=0.25),
        patch_size=24,
        patches_per_epoch=16,
        batch_size=8,
        eval_batch_size=2,
        eval_crop=48,
    )
    dm.setup()
    names = dm.image_names
    assert [len(names[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert sorted(n for s in names.values() for n in s) == sorted(str(p) for p in paths)
    noisy, clean = next(iter(dm.train_dataloader()))
    assert noisy.shape == clean.shape == (8, 1, 24, 24)
    val = _batches(dm.val_dataloader())
    assert [n.shape for n, _ in val] == [(2, 1, 48, 48)]
    again = DenoisingDataModule(
        source=folder(tmp_path / "clean", val_fraction=0.25, test_fraction=0.25, split_seed=0),
        patch_size=24,
    )
    again.setup()
    assert again.image_names == names  # the split depends only on the files and split_seed
    big_crop = DenoisingDataModule(source=folder(tmp_path / "clean"), eval_crop=500, patch_size=24)
    big_crop.setup()
    assert big_crop.eval_crops == {"val": 64, "test": 64}  # reduced to the smallest image side
    with pytest.raises(UserError, match="too few images"):
        DenoisingDataModule(source=folder(tmp_path / "clean", val_fraction=0.5, test_fraction=0.45)).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        DenoisingDataModule(source=folder(tmp_path / "empty")).setup()


def _pairs(root: Path, n: int) -> None:
    photo = load_skimage_photo("coffee")
    for i in range(n):
        clean = photo[i * 30 : i * 30 + 60, i * 40 : i * 40 + 80]
        write_image(root / "clean" / f"img_{i}.png", clean)
        write_image(root / "noisy" / f"img_{i}.png", 255 - clean)  # "noise" = inversion: easy to check


def test_paired_source_crops_the_same_window(tmp_path):
    _pairs(tmp_path, 6)
    dm = DenoisingDataModule(
        source=paired(tmp_path, val_fraction=0.2, test_fraction=0.2),
        channels=3,
        noise=None,
        patch_size=20,
        patches_per_epoch=16,
        batch_size=8,
        eval_crop=40,
    )
    dm.setup()
    assert [len(dm.image_names[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    for noisy, clean in list(dm.train_dataloader()) + list(dm.val_dataloader()):
        assert noisy.shape == clean.shape and noisy.shape[1] == 3
        torch.testing.assert_close(noisy, 1 - clean, atol=1e-6, rtol=0)


def test_paired_source_errors(tmp_path):
    _pairs(tmp_path, 4)
    (tmp_path / "noisy" / "img_2.png").unlink()
    with pytest.raises(UserError, match=r"img_2\.png has no partner"):
        DenoisingDataModule(source=paired(tmp_path, val_fraction=0.25, test_fraction=0.25)).setup()
    write_image(tmp_path / "noisy" / "img_2.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(UserError, match="same size"):
        DenoisingDataModule(source=paired(tmp_path, val_fraction=0.25, test_fraction=0.25)).setup()
    with pytest.raises(UserError, match="noisy"):
        DenoisingDataModule(source=paired(tmp_path / "nowhere")).setup()


def test_workers_give_distinct_patches_and_identical_eval(tmp_path):
    kwargs = dict(source=photos(SMALL), patch_size=32, patches_per_epoch=32, batch_size=8, eval_crop=96)
    dm = DenoisingDataModule(**kwargs, num_workers=2, persistent_workers=True)
    dm.setup()
    loader = dm.train_dataloader()
    batches = _batches(loader)
    assert len(batches) == 4 and all(n.shape == (8, 1, 32, 32) for n, _ in batches)
    noisy = torch.cat([n for n, _ in batches]).flatten(1)
    assert torch.unique(noisy, dim=0).shape[0] == 32  # no patch repeated across workers
    second_epoch = torch.cat([n for n, _ in _batches(loader)]).flatten(1)
    assert not torch.equal(noisy, second_epoch)
    single = DenoisingDataModule(**kwargs)
    single.setup()
    _assert_same(_batches(dm.val_dataloader()), _batches(single.val_dataloader()))


def test_cifar10_source(tmp_path):
    from datamodules.cifar10_reader import write_cifar10_like

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 32, 32, 3)).astype(np.uint8)
    test = rng.integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    write_cifar10_like(tmp_path, train, np.arange(20) % 10, test, np.arange(6), [str(i) for i in range(10)])
    dm = DenoisingDataModule(
        source=cifar10(tmp_path, val_fraction=0.25),
        channels=3,
        patch_size=32,
        eval_crop=None,
        eval_batch_size=4,
        batch_size=5,
        patches_per_epoch=10,
    )
    dm.prepare_data()
    dm.setup()
    assert [len(dm.image_names[s]) for s in ("train", "val", "test")] == [15, 5, 6]
    noisy, clean = next(iter(dm.test_dataloader()))
    assert noisy.shape == (4, 3, 32, 32)
    torch.testing.assert_close(clean[0], torch.from_numpy(test[0]).permute(2, 0, 1) / 255.0)
    assert next(iter(dm.train_dataloader()))[0].shape == (5, 3, 32, 32)
    capped = DenoisingDataModule(source=cifar10(tmp_path, max_images=8, val_fraction=0.25), patch_size=32)
    capped.setup()
    assert [len(capped.image_names[s]) for s in ("train", "val", "test")] == [6, 2, 6]
    with pytest.raises(UserError, match="patch_size 40"):
        DenoisingDataModule(source=cifar10(tmp_path)).setup()
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        DenoisingDataModule(source=cifar10(tmp_path / "none")).setup()


@pytest.mark.parametrize("name", ["denoise_photos", "denoise_folder", "denoise_cifar10", "denoise_pairs"])
def test_configs_instantiate(tmp_path, name):
    from datamodules.cifar10_reader import write_cifar10_like
    from imagelab.config.instantiation import instantiate_node
    from tests.helpers.compose import compose

    overrides = [f"data={name}", f"paths.data_dir={tmp_path}"]
    if name == "denoise_folder":
        _photo_folder(tmp_path / "imgs", 6)
        overrides += [f"data.source.root={tmp_path / 'imgs'}", "data.patch_size=32"]
    elif name == "denoise_pairs":
        _pairs(tmp_path, 5)
        overrides += [f"data.source.root={tmp_path}", "data.patch_size=32"]
    elif name == "denoise_cifar10":
        images = np.zeros((20, 32, 32, 3), np.uint8)
        write_cifar10_like(tmp_path, images, np.zeros(20), images[:4], np.zeros(4), ["a"])
    cfg = compose("train", overrides, output_dir=tmp_path)
    assert cfg.data._target_ == "datamodules.denoising.DenoisingDataModule"
    dm = instantiate_node(cfg.data, "data")
    assert isinstance(dm, DenoisingDataModule)
    dm.setup()
    assert all(isinstance(v, (str, int, float, bool, dict, list, type(None))) for v in dm.hparams.values())
    assert dm.hparams["source"]["_target_"].startswith("datamodules.")
    noisy, clean = next(iter(dm.val_dataloader()))
    assert noisy.shape == clean.shape and noisy.shape[1] == dm.channels
