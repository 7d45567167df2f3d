"""Whether SLURM requeued this job; ``resume.resume_point`` then continues it from its own last checkpoint."""

from __future__ import annotations

import os


def slurm_restart_count() -> int:
    """How often SLURM has restarted/requeued this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0
