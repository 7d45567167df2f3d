"""Names shared by the layers: the files a run writes and the keys a checkpoint carries."""

from __future__ import annotations

METRICS_FILE = "metrics.json"
"""The record every job writes into its run directory (status, objective, metrics, W&B run)."""

RUN_CONFIG_KEY = "run_config"
"""The checkpoint key holding the run's resolved config: what eval/denoise/predict rebuild the model from."""

HYDRA_DIR = ".hydra"
"""Hydra's folder in a run directory: ``config.yaml``, ``overrides.yaml``, ``hydra.yaml``."""
