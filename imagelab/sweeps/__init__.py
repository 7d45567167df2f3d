"""Sweeps: Optuna search support, the Hydra callbacks that make ``-m`` sweeps work, and sweep summaries."""
