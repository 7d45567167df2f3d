"""The top layer: what the scripts run (train, evaluate, denoise, predict, benchmark, sweep summaries, export,
compress, serve) and the launch helpers around them (task runner, resume, DDP launch, Hydra callbacks).

Layers (enforced by import-linter, see ``[tool.importlinter]`` in pyproject.toml), each importing only
the ones below it: ``tasks`` > ``deployment`` > ``lightning_modules`` | ``datamodules`` > ``experiment_utils``.
"""
