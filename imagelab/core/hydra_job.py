"""What the running Hydra job is: a single run or one job of a ``-m`` sweep."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def in_multirun() -> bool:
    """True inside a Hydra ``-m`` job (False outside a Hydra app, e.g. a task called from a test)."""
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False
