"""Denoise image files with a trained checkpoint: ``python scripts/denoise.py ckpt_path=... input=... output=...``.

Keeps file names, grayscale/colour and 8/16-bit depth; tiles large images; never writes over its inputs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="denoise")
def main(cfg: DictConfig) -> None:
    """Run the denoise task on ``cfg.input`` and write the results to ``cfg.output``."""
    from imagelab.tasks.inference import denoise_files
    from imagelab.tasks.runner import run_task

    run_task(denoise_files, cfg)


if __name__ == "__main__":
    main()
