"""Export a checkpoint: ``python scripts/export.py ckpt_path=... format=onnx|torchscript|safetensors [output=...]``.

ONNX gets a dynamic batch (and height/width for denoisers); the metadata a user needs (kind, channels, a
classifier's preprocessing and class names) goes inside the file and beside it as ``<file>.json``. The file is
loaded back and compared with PyTorch on real test images (parity, latency); see docs/deployment.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Run the export task."""
    from imagelab.tasks.runner import run_task

    run_task(_export, cfg)


def _export(cfg: DictConfig) -> dict:
    """The task itself, imported only after run_task has checked the config (it loads torch)."""
    from imagelab.tasks.export import export

    return export(cfg)


if __name__ == "__main__":
    main()
