"""A new noise model and a new clean-image source are one class each (tests/helpers/data_plugins.py) plus one
YAML file each, in a config folder of the user's own (``hydra.searchpath``): no edit of this repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from datamodules.clean_sources import load_skimage_photo
from imagelab.config.instantiation import instantiate_node
from tests.helpers.compose import compose
from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import ONE_EPOCH_DENOISE
from tests.helpers.runs import psnr_gain

NOISE_YAML = """\
_target_: tests.helpers.data_plugins.SpeckleNoise
sigma: 40.0
clip: false
"""
SOURCE_YAML = """\
_target_: tests.helpers.data_plugins.NpyStackImages
path: ???
val_fraction: 0.25
test_fraction: 0.25
"""


def _user_files(root: Path) -> tuple[Path, Path]:
    """The user's config folder (two YAML files) and a .npy stack of 8 gray photo crops."""
    (root / "conf" / "data" / "noise").mkdir(parents=True)
    (root / "conf" / "data" / "source").mkdir(parents=True)
    (root / "conf" / "data" / "noise" / "speckle.yaml").write_text(NOISE_YAML)
    (root / "conf" / "data" / "source" / "npy_stack.yaml").write_text(SOURCE_YAML)
    photos = [load_skimage_photo(name) for name in ("camera", "moon", "coins", "brick")]
    crops = [p[y : y + 64, x : x + 64] for p in photos for y, x in ((40, 40), (150, 100))]
    np.save(root / "stack.npy", np.stack(crops))
    return root / "conf", root / "stack.npy"


def _overrides(conf: Path, stack: Path) -> list[str]:
    return [
        f"hydra.searchpath=[file://{conf}]",
        "data/noise=speckle",
        "data/source=npy_stack",
        f"data.source.path={stack}",
    ]


def test_user_noise_and_source_build_from_their_yaml(tmp_path: Path) -> None:
    conf, stack = _user_files(tmp_path)
    cfg = compose("train", _overrides(conf, stack), output_dir=tmp_path)
    assert cfg.data.noise._target_ == "tests.helpers.data_plugins.SpeckleNoise"
    dm = instantiate_node(cfg.data, "data")
    dm.setup()
    assert [len(dm.image_names[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert dm.image_names["val"][0].startswith("stack.npy[")
    noisy, clean = next(iter(dm.val_dataloader()))
    residual = (noisy - clean) / clean.clamp(min=0.05)
    # multiplicative: the residual relative to the clean value has std sigma/255, dark pixels barely move
    assert residual[clean > 0.2].std().item() * 255 == pytest.approx(40, rel=0.05)
    assert torch.equal(noisy, next(iter(dm.val_dataloader()))[0])  # fixed, seeded val noise
    assert dm.hparams["noise"] == {
        "_target_": "tests.helpers.data_plugins.SpeckleNoise",
        "sigma": 40.0,
        "clip": False,
    }


@pytest.mark.slow
def test_user_noise_and_source_train_and_reload_from_the_checkpoint(tmp_path: Path) -> None:
    conf, stack = _user_files(tmp_path)
    overrides = [
        *_overrides(conf, stack),
        *ONE_EPOCH_DENOISE,
        "data.patch_size=32",
        "data.eval_crop=64",
    ]
    result = train_in_process(tmp_path, *overrides)
    assert result["trainer"].global_step == 4
    assert psnr_gain(result["metrics"]) > 0.1, result["metrics"]  # 4 steps from the identity: 0.2-0.3 dB
    ckpt_path = result["trainer"].checkpoint_callback.best_model_path
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # plain hyperparameters only
    data_cfg = OmegaConf.create(ckpt["run_config"]["data"])
    assert data_cfg.source._target_ == "tests.helpers.data_plugins.NpyStackImages"
    rebuilt = instantiate_node(data_cfg, "data")  # the checkpoint alone rebuilds the user's data
    rebuilt.setup()
    assert len(rebuilt.image_names["test"]) == 2 and isinstance(rebuilt.eval_noise, type(rebuilt.noise))
    assert type(rebuilt.noise).__name__ == "SpeckleNoise" and rebuilt.noise.sigma == 40.0
