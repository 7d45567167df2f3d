"""Serve a model over HTTP: ``python scripts/serve.py ckpt_path=...|model_path=... [port=8000]``.

``POST /predict`` with an image file (multipart field ``file``) returns the denoised image in the same format
and bit depth, or a classifier's top-k as JSON; ``GET /health`` says when the model is ready. Requests that
arrive together are batched; bad input gets a 4xx with a one-line reason. See docs/deployment.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imagelab.resolvers import register_resolvers

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    """Run the serve task (until interrupted)."""
    from imagelab.tasks.runner import run_task
    from imagelab.tasks.serve import serve

    run_task(serve, cfg)


if __name__ == "__main__":
    main()
