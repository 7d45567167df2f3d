"""The bottom layer: errors, atomic files, config helpers and resolvers, distributed helpers, run folders,
signals, checkpoint I/O, and the Lightning callbacks and W&B helpers every model and task shares.

It imports nothing else of this project (import-linter checks it: ``[tool.importlinter]`` in
pyproject.toml). Kept free of heavy imports so that `--help`, `--cfg job` and tab completion stay fast.
Importing the package registers the ``${unique_dir:...}`` / ``${optuna_seed:...}`` config resolvers.
"""

from experiment_utils.resolvers import register_resolvers

register_resolvers()
