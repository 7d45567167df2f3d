"""Re-score a checkpoint on its test split: ``python scripts/eval.py ckpt_path=PATH``.

The data and model settings travel inside the checkpoint, so nothing else is needed. For denoisers the
table also shows the noisy input and classical baselines (TV, non-local means) on the same test images.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Run the eval task; return the checkpoint's test objective."""
    from imagelab.tasks.evaluation import evaluate
    from imagelab.tasks.runner import run_task

    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
