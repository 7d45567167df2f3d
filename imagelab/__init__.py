"""imagelab: the experiment framework's one import namespace (beside ``datamodules`` and ``lightning_modules``).

Subpackages, bottom layer first (import-linter checks the order: ``[tool.importlinter]`` in pyproject.toml):
``core`` (errors, files, devices, distributed, signals, run folders), ``config`` (``_target_`` nodes, the
config check, the objective, checkpoints' run config), ``tracking`` (console, W&B, image panels),
``callbacks`` (the shared Lightning callbacks); then the ``datamodules`` and ``lightning_modules`` packages;
then ``sweeps`` (Optuna, Hydra callbacks, summaries) and ``deploy`` (export, quantise, prune, run files);
``tasks`` (what the scripts run) on top.

Kept free of heavy imports so that ``--help``, ``--cfg job`` and tab completion stay fast. Importing the
package registers the ``${unique_dir:...}`` / ``${optuna_seed:...}`` config resolvers.
"""

from imagelab.resolvers import register_resolvers

register_resolvers()
