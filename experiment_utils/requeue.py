"""Resume a SLURM job that was requeued (time limit or preemption) from its own last checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def slurm_restart_count() -> int:
    """How often SLURM has restarted/requeued this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def requeued_checkpoint(trainer: Any) -> str | None:
    """``last.ckpt`` of this job's checkpoint folder if SLURM requeued the job and the file exists, else None.

    The submitit launcher (hydra/launcher=slurm) resubmits a job that hit its time limit or was preempted into
    the same job folder; fitting then continues from the last saved epoch instead of starting over.
    """
    if slurm_restart_count() <= 0:
        return None
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    last = Path(dirpath) / "last.ckpt" if dirpath else None
    if last is None or not last.is_file():
        return None
    log.info("SLURM requeued this job (restart %d): resuming from %s", slurm_restart_count(), last)
    return str(last)
