"""torchrun restarts (``--max-restarts``): whether this worker is a restart of a torchrun job in its folder.

torchrun restarts the workers of every node after one failed, but only the failed node's workers see
``TORCHELASTIC_RESTART_COUNT`` > 0 (the other node's agent restarts its healthy workers without counting),
so the count cannot tell every rank that it is a restart. The run folder can: rank 0 marks it with the
torchrun job's id (``TORCHELASTIC_RUN_ID``, torchrun's ``--rdzv-id``) when it first starts there, and a worker
that finds its own job's mark is a restart. It then continues from the folder's ``last.ckpt``
(``resume.resume_point``), like a requeued SLURM job.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagelab.core.atomic import atomic_write_text

RUN_MARK = ".torchrun_id"  # in the run folder: the id of the torchrun job that started the run


def torchrun_restarted(output_dir: Path, rank: int) -> bool:
    """True when this torchrun worker (with ``--max-restarts`` > 0) restarts a job that already ran in
    ``output_dir``; rank 0 of a job's first start marks the folder (see the module docstring)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    try:
        max_restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    except ValueError:
        max_restarts = 0
    if not run_id or max_restarts <= 0:
        return False
    mark = Path(output_dir) / RUN_MARK
    try:
        if mark.read_text().strip() == run_id:
            return True
    except OSError:
        pass
    if rank == 0:
        atomic_write_text(mark, run_id)
    return False
