"""Make Lightning's DDP child processes re-run exactly the current Hydra job, also inside a multirun.

Lightning starts ranks 1..N-1 by re-running ``sys.argv`` with ``hydra.run.dir`` set to the *run* directory.
Inside ``-m`` that re-launches the whole sweep in every child (new output folders, different sampled
hyper-parameters per rank). Here the children get the job's own resolved overrides, no ``-m``, and the job's
output directory, so every rank trains the same configuration and writes nowhere else.

Inside a sweep the jobs run one after another in the same process: :func:`release_distributed_job` (called by
``run_task`` after each multirun job) destroys the job's process group and removes the rank variables
Lightning's launcher put into ``os.environ``, so the next job starts its own ranks instead of talking to the
finished job's ones.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path

import __main__
from imagelab.core.errors import UserError
from imagelab.tasks.lost_rank import install_lost_rank_watch

log = logging.getLogger(__name__)

# Variables Lightning's subprocess launcher sets in the parent process before it starts ranks 1..N-1.
LAUNCHER_ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_env_before_job: dict[str, str | None] | None = None


def hydra_job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd that start DDP rank ``local_rank`` of the current Hydra job (single run or sweep)."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and "joblib" in str(hc.launcher.get("_target_", "")):
        raise UserError(
            "multi-device training cannot start its ranks inside a joblib worker: use trainer.devices=1 per "
            "joblib job (one GPU each via CUDA_VISIBLE_DEVICES), or the basic/submitit launcher for DDP jobs"
        )
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if hc.job.config_name:
        command += ["--config-name", hc.job.config_name]
    command += [o for o in hc.overrides.task]
    command += [
        f'hydra.run.dir="{hc.runtime.output_dir}"',
        f"hydra.job.name={hc.job.name}_ddp_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    log.info("starting DDP rank %d: %s", local_rank, " ".join(command))
    return command, get_original_cwd()


def install_hydra_job_subprocess_cmd() -> None:
    """Point Lightning's subprocess launchers at :func:`hydra_job_subprocess_cmd` (and their child-process
    observer at ``lost_rank``).

    Also remembers the launcher's environment variables as they are before the job, for
    :func:`release_distributed_job`.
    """
    global _env_before_job
    if _env_before_job is None:
        _env_before_job = {name: os.environ.get(name) for name in LAUNCHER_ENV_VARS}
    # lazy: imagelab.tasks.runner imports this module, and runs before the config is checked must not load Lightning
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    fabric_launcher._hydra_subprocess_cmd = hydra_job_subprocess_cmd
    pytorch_launcher._hydra_subprocess_cmd = hydra_job_subprocess_cmd
    install_lost_rank_watch()  # a rank that dies ends the job with one line naming it


def release_distributed_job() -> None:
    """End the finished job's DDP state in this process, so the next job of a sweep starts fresh ranks.

    Destroys the default process group (its peers, the job's rank processes, are gone) and restores the
    ``MASTER_PORT``/``LOCAL_RANK``/... variables to what they were before the job. Without this the second
    job of a ``-m trainer=ddp`` sweep sees ``LOCAL_RANK`` set, believes its ranks were started externally and
    waits for (or talks to) the first job's dead processes.
    """
    global _env_before_job
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if _env_before_job is not None:
        for name, value in _env_before_job.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _env_before_job = None
