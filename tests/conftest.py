"""Shared test set-up: everything offline, runs in temporary folders, helpers to compose and run scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Offline everywhere, also in the scripts the tests start as subprocesses (they inherit os.environ).
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_DISABLE_GIT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
SCRIPTS = REPO_ROOT / "scripts"

# Small, fast settings shared by the tests that run the real scripts on the bundled photos.
FAST_DENOISE = [
    "logger=wandb",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.patches_per_epoch=256",
    "data.eval_crop=96",
    "model.net.depth=5",
    "model.net.width=16",
]


def run_script(
    script: str,
    *overrides: str,
    cwd: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with Hydra overrides in ``cwd`` (outputs go to ``cwd/outputs``); ``env`` adds
    environment variables."""
    cmd = [sys.executable, str(SCRIPTS / script), *overrides]
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def compose(config_name: str = "train", overrides: list[str] | None = None, output_dir: Path | None = None):
    """Compose a config the way the scripts do, with the hydra node set so ``${hydra:...}`` resolves."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(output_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary launch directory (outputs/ and wandb/ land inside it)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def single_run_dir(root: Path, task: str = "train") -> Path:
    """The one run directory under ``root/outputs/<task>/runs``; fails if there are none or several."""
    runs = sorted((root / "outputs" / task / "runs").iterdir())
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]
