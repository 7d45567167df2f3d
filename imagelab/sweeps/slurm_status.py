"""Quiet submitit's status polls on a SLURM cluster without accounting storage (``sacct`` unavailable).

submitit asks ``sacct`` for its jobs' states at every poll. Where the cluster keeps no accounting database
(e.g. the local cluster of scripts/cluster/local_slurm.sh) each poll logs a "Bypassing sacct error" warning,
while submitit still tells finished jobs apart through the result files its jobs write. The callback lets the
first of those warnings through as one explanatory line and drops the repeats.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SACCT_WARNING = "Bypassing sacct error"


class _OnceSacctWarning(logging.Filter):
    """Turn the first sacct warning into one info line; drop the later ones."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_WARNING not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = (
            "sacct is not available (no SLURM accounting storage): job states come from submitit's own "
            "result files; further sacct errors are not shown",
            None,
        )
        return True


class QuietSacctPolls(Callback):
    """Install the once-only sacct warning filter on submitit's logger for the duration of a ``-m`` run."""

    def __init__(self) -> None:
        self._filter: _OnceSacctWarning | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Filter submitit's repeated sacct warnings (harmless on a cluster with accounting: none occur)."""
        self._filter = _OnceSacctWarning()
        logging.getLogger("submitit").addFilter(self._filter)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Remove the filter again."""
        if self._filter is not None:
            logging.getLogger("submitit").removeFilter(self._filter)
            self._filter = None
