"""Compress a checkpoint: ``python scripts/compress.py ckpt_path=... method=int8_dynamic|int8_static|prune|all``.

int8 through onnxruntime's quantisation toolkit, structured channel pruning through torch-pruning (a new
checkpoint that ``scripts/train.py model.checkpoint_path=...`` fine-tunes); every variant is measured in
``report.md``/``report.json`` (size, parameters, CPU latency, test metric). See docs/deployment.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="compress")
def main(cfg: DictConfig) -> None:
    """Run the compress task."""
    from imagelab.tasks.runner import run_task

    run_task(_compress, cfg)


def _compress(cfg: DictConfig) -> dict:
    """The task itself, imported only after run_task has checked the config (it loads torch)."""
    from imagelab.tasks.compress import compress

    return compress(cfg)


if __name__ == "__main__":
    main()
