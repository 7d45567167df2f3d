"""Every config option composes, and what it describes can be built; printing configs stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from imagelab.config.instantiation import instantiate_callbacks, instantiate_node
from imagelab.core.errors import UserError
from imagelab.tracking.loggers import instantiate_loggers
from tests.helpers.compose import compose
from tests.helpers.paths import CONF_DIR, REPO_ROOT

# Values a user must supply for some options (marked ??? in the YAML).
REQUIRED = {
    "data/denoise_folder": ["data.source.root=/nonexistent/clean"],
    "data/denoise_pairs": ["data.source.root=/nonexistent/pairs"],
    "data/image_folder": ["data.root=/nonexistent/images"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group",
    [
        *["data", "model", "trainer", "logger", "callbacks", "debug", "experiment"],
        *["model/net", "model/loss", "model/optimizer", "model/scheduler"],
    ],
)
def test_every_option_composes(group: str, tmp_path: Path) -> None:
    names = options(group)
    assert names, f"conf/{group} is empty"
    for name in names:
        overrides = [f"{group}={name}", *REQUIRED.get(f"{group}/{name}", [])]
        cfg = compose("train", overrides, output_dir=tmp_path)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def _class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def assert_built_as_configured(obj: object, node: DictConfig) -> None:
    """``obj`` is the class the node's ``_target_`` names, and holds the node's plain values (as
    hyperparameters or attributes of the same name); at least half of them are checked that way."""
    assert _class_path(obj) == node._target_
    hparams = getattr(obj, "hparams", {})
    plain = {k: v for k, v in node.items() if k != "_target_" and not isinstance(v, DictConfig | ListConfig)}
    held = {
        k: hparams[k] if k in hparams else getattr(obj, k) for k in plain if k in hparams or hasattr(obj, k)
    }
    assert held == {k: plain[k] for k in held}
    assert len(held) >= len(plain) / 2, f"only {sorted(held)} of {sorted(plain)} are visible on the object"


@pytest.mark.parametrize("name", options("data"))
def test_data_options_instantiate(name: str, tmp_path: Path) -> None:
    from lightning.pytorch import LightningDataModule

    cfg = compose("train", [f"data={name}", *REQUIRED.get(f"data/{name}", [])], output_dir=tmp_path)
    datamodule = instantiate_node(cfg.data, "data")
    assert isinstance(datamodule, LightningDataModule)
    assert_built_as_configured(datamodule, cfg.data)
    assert datamodule.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("name", options("model"))
def test_model_options_instantiate(name: str, tmp_path: Path) -> None:
    import torch

    cfg = compose("train", [f"model={name}"], output_dir=tmp_path)
    model = instantiate_node(cfg.model, "model")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_instantiate(experiment: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"experiment={experiment}"], output_dir=tmp_path)
    model, data = instantiate_node(cfg.model, "model"), instantiate_node(cfg.data, "data")
    assert_built_as_configured(model, cfg.model)
    assert_built_as_configured(data, cfg.data)
    assert data.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("trainer", [t for t in options("trainer") if t not in ("gpu", "ddp")])
def test_cpu_trainers_and_callbacks_and_loggers_instantiate(trainer: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"trainer={trainer}", "logger=wandb"], output_dir=tmp_path)
    OmegaConf.update(cfg, "objective", {"metric": "val/psnr", "mode": "max"}, force_add=True)
    callbacks = instantiate_callbacks(cfg.callbacks)
    assert {type(c).__name__ for c in callbacks} >= {
        "ModelCheckpoint",
        "EarlyStopping",
        "LearningRateMonitor",
    }
    loggers = instantiate_loggers(cfg.logger)
    assert [type(lg).__name__ for lg in loggers] == ["WandbLogger"]
    trainer_obj = instantiate_node(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    assert trainer_obj.num_devices == (2 if trainer == "ddp_sim" else 1)


def test_gpu_trainer_configs_ask_for_gpus(tmp_path: Path) -> None:
    for name in ("gpu", "ddp"):
        cfg = compose("train", [f"trainer={name}"], output_dir=tmp_path)
        assert cfg.trainer.accelerator == "gpu"
    assert compose("train", ["trainer=ddp"], output_dir=tmp_path).trainer.strategy == "ddp"


def test_unknown_constructor_key_is_a_user_error(tmp_path: Path) -> None:
    cfg = compose("train", ["+model.net.not_a_key=3"], output_dir=tmp_path)
    with pytest.raises(UserError, match="not_a_key"):
        instantiate_node(cfg.model, "model")


def test_print_config_and_help_do_not_import_torch(tmp_path: Path) -> None:
    for args in (["--cfg", "job"], ["--help"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(REPO_ROOT / "scripts" / "train.py"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        heavy = {
            m for m in imported if m.split(".")[0] in ("torch", "lightning", "wandb", "timm", "torchvision")
        }
        assert not heavy, f"{args} imported {sorted(heavy)[:5]}"
    help_text = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "denoise_photos" in help_text and "ddp_sim" in help_text  # the groups' options are listed
