"""The run's own files in its W&B run (light imports: the task wrapper uses it before Lightning is loaded)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from imagelab.core.constants import HYDRA_DIR, METRICS_FILE


def attach_run_files(output_dir: Path, cfg: Any = None) -> list[str]:
    """Copy the run's ``metrics.json`` and resolved config (``config.yaml``) into the active W&B run's files.

    ``config.yaml`` is ``cfg`` resolved when given, else Hydra's ``.hydra/config.yaml``. Returns the names
    attached; nothing happens without an active run (W&B off, another rank).
    """
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return []
    files_dir = Path(run.dir)
    attached = []
    metrics = Path(output_dir) / METRICS_FILE
    if metrics.is_file():
        shutil.copyfile(metrics, files_dir / METRICS_FILE)
        attached.append(METRICS_FILE)
    config_text = None
    if cfg is not None:
        try:
            config_text = OmegaConf.to_yaml(cfg, resolve=True)
        except Exception:  # an interpolation that cannot be resolved any more: fall back to Hydra's copy
            config_text = None
    hydra_config = Path(output_dir) / HYDRA_DIR / "config.yaml"
    if config_text is None and hydra_config.is_file():
        config_text = hydra_config.read_text()
    if config_text is not None:
        (files_dir / "config.yaml").write_text(config_text)
        attached.append("config.yaml")
    for name in attached:
        run.save(str(files_dir / name), base_path=str(files_dir), policy="now")
    return attached


def loggable_config(value: Any) -> Any:
    """``value`` (plain dicts/lists) without the ``None`` entries of its dicts, recursively.

    The W&B config then shows the settings a run used, not the unfilled placeholders (``entity: null``,
    ``scheduler: null``, ...); an empty dict left behind is dropped too.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = loggable_config(item)
            if item is None or (isinstance(item, dict) and not item):
                continue
            out[key] = item
        return out
    if isinstance(value, list | tuple):
        return [loggable_config(v) for v in value]
    return value
