"""Classify image files with a trained checkpoint: ``python scripts/predict.py ckpt_path=... input=FILE_OR_DIR``.

Prints the top-k classes with their names and probabilities for each image; the class names and the
preprocessing travel inside the checkpoint, so nothing else is needed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Run the predict task on ``cfg.input``."""
    from imagelab.tasks.prediction import predict_files
    from imagelab.tasks.runner import run_task

    run_task(predict_files, cfg)


if __name__ == "__main__":
    main()
