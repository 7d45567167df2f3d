"""SLURM requeue: whether this job was requeued, and putting it back into the queue after SIGUSR1.

A requeued job (``SLURM_RESTART_COUNT`` > 0) continues from its own ``last.ckpt`` (``resume.resume_point``).
"""

from __future__ import annotations

import os
import subprocess


def slurm_restart_count() -> int:
    """How often SLURM has restarted/requeued this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job (``<array job>_<task>`` in an array), None outside SLURM."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_job() -> str:
    """Put this SLURM job back into the queue (``scontrol requeue``); return a one-line account of it."""
    job_id = slurm_job_id()
    if job_id is None:
        return "not a SLURM job: nothing requeued"
    try:
        proc = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not requeue SLURM job {job_id}: {exc}"
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return f"could not requeue SLURM job {job_id}: {reason[0] if reason else f'exit {proc.returncode}'}"
    return f"requeued SLURM job {job_id}: it continues from last.ckpt in the same folder"
