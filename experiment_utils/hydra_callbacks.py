"""Hydra callbacks that make sweeps work (``hydra.callbacks`` in conf/hydra/default.yaml); light imports."""

from __future__ import annotations

import copy
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class HydraConfigInSweeper(Callback):
    """Make ``${hydra:...}`` resolvable in the sweeper and launcher process of a ``-m`` run.

    Hydra sets ``HydraConfig`` only inside each job, but the sweeper resolves ``hydra.sweep.dir`` (and the
    Optuna sweeper its storage path) before any job starts. Ours interpolate ``paths.log_dir``, whose root is
    ``${hydra:runtime.cwd}``; without this callback every multirun stops with "HydraConfig was not set".
    A copy of the config is registered so the sweeper's own config does not become read-only.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Register the multirun's config as the current Hydra config before the sweeper is built."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(copy.deepcopy(config))


class DataLoaderWorkersInJoblib(Callback):
    """Let jobs of ``hydra/launcher=joblib`` use data-loader worker processes (``data.num_workers > 0``).

    joblib's loky workers make ``loky`` the default multiprocessing start method of their process; PyTorch's
    DataLoader then starts plain ``multiprocessing.Process`` workers through loky's launcher, which fails with
    "'Process' object has no attribute 'env'". Before each job in such a worker, the platform's own default
    start method (fork on Linux, spawn on macOS) is restored for that worker process only.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Restore the platform's start method when this job runs inside a loky worker."""
        import multiprocessing

        if multiprocessing.get_start_method(allow_none=True) == "loky":
            multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
