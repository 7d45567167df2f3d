"""Glue shared by the entry points and the tests: config instantiation, the task wrapper, W&B set-up.

Kept free of heavy imports so that `--help`, `--cfg job` and tab completion stay fast.
"""

from experiment_utils.resolvers import register_resolvers

register_resolvers()
