"""The run's Lightning loggers from the ``logger`` config group, with W&B named and grouped by the Hydra job."""

from __future__ import annotations

import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from imagelab.config.instantiation import instantiate_node, target_nodes
from imagelab.tracking.console import quiet_wandb_logger
from imagelab.tracking.wandb_fallback import start_online_or_offline
from imagelab.tracking.wandb_mode import resolve_wandb_mode


def wandb_run_name_and_group() -> tuple[str | None, str | None]:
    """Run name from the job's command-line overrides and group from the sweep, when Hydra runs the job."""
    try:
        if not HydraConfig.initialized():
            return None, None
        hc = HydraConfig.get()
    except ValueError:
        return None, None
    overrides = [o for o in hc.overrides.task if not o.startswith(("hydra.", "logger.", "paths.", "resume="))]
    name = ",".join(overrides) or None
    group = None
    if hc.mode == RunMode.MULTIRUN:
        group = f"{hc.job.name}-{os.path.basename(os.path.normpath(hc.sweep.dir))}"
    return name, group


def _build(node: DictConfig, name: str) -> Any:
    return quiet_wandb_logger(instantiate_node(node, f"logger.{name}"))


def instantiate_loggers(logger_cfg: DictConfig | None, wandb_id: str | None = None) -> list[Any]:
    """Instantiate the configured Lightning loggers; W&B's ``mode: auto`` is resolved without a login prompt.

    ``wandb_id`` continues that W&B run (a resumed or requeued run logs to the run it started). An online W&B
    run whose server does not answer continues offline under the same id (``wandb_fallback``).
    """
    loggers: list[Any] = []
    for name, node in target_nodes(logger_cfg, "logger"):
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        if node._target_.endswith("WandbLogger"):
            with open_dict(node):
                node.mode = resolve_wandb_mode(node.get("mode"))
                if node.mode == "disabled":
                    continue
                run_name, group = wandb_run_name_and_group()
                if not node.get("name"):
                    node.name = run_name
                if not node.get("group"):
                    node.group = group
                if wandb_id:
                    node.id, node.resume = wandb_id, "allow"
                os.makedirs(node.save_dir, exist_ok=True)
            loggers.append(start_online_or_offline(node, lambda n, name=name: _build(n, name)))
            continue
        loggers.append(_build(node, name))
    return loggers
