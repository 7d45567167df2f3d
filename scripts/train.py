"""Train a model: ``python scripts/train.py [group=option ...] [key=value ...]`` (add ``-m`` to sweep).

Composes ``conf/train.yaml``; fits, tests the best checkpoint, writes ``metrics.json`` to the run directory
and returns the objective for sweepers. Heavy libraries are imported only once a job really runs, so
``--help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from imagelab.core.errors import UserError
from imagelab.resolvers import register_resolvers
from imagelab.tasks.resume import resume_argv

register_resolvers()  # ${unique_dir:...} names this run's folder before Hydra creates it


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run the train task on the composed config; return the monitored metric's best value."""
    from imagelab.tasks.runner import run_task
    from imagelab.tasks.training import train

    return run_task(train, cfg)


if __name__ == "__main__":
    try:
        sys.argv = resume_argv(sys.argv)  # resume=<run dir>|last: the run's own overrides + the new ones
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
