"""Compose configs the way the scripts do, in the test's own process (no interpreter start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.paths import CONF_DIR


def compose(config_name: str = "train", overrides: list[str] | None = None, output_dir: Path | None = None):
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides, with the hydra node set so ``${hydra:...}``
    resolves; ``output_dir`` becomes the run folder (``paths.output_dir``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    if output_dir is not None:
        set_output_dir(cfg, output_dir)
    return activate(cfg)


def set_output_dir(cfg: Any, output_dir: Path) -> None:
    """Point a composed config's run folder (``hydra.runtime.output_dir``, the job's cwd) at ``output_dir``."""
    from omegaconf import open_dict, read_write

    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0


def activate(cfg: Any) -> Any:
    """Make ``cfg`` Hydra's current config (what ``${hydra:...}`` and ``HydraConfig.get()`` read); returns it."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    return cfg


def as_multirun(cfg: Any, overrides: list[str] | None = None) -> None:
    """Put a composed config (and Hydra's current config) into multirun mode, as a sweep's job sees it;
    ``overrides`` become the job's task overrides."""
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        if overrides is not None:
            cfg.hydra.overrides.task = overrides
    activate(cfg)
