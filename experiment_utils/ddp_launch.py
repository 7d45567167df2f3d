"""Make Lightning's DDP child processes re-run exactly the current Hydra job, also inside a multirun.

Lightning starts ranks 1..N-1 by re-running ``sys.argv`` with ``hydra.run.dir`` set to the *run* directory.
Inside ``-m`` that re-launches the whole sweep in every child (new output folders, different sampled
hyper-parameters per rank). Here the children get the job's own resolved overrides, no ``-m``, and the job's
output directory, so every rank trains the same configuration and writes nowhere else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def hydra_job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd that start DDP rank ``local_rank`` of the current Hydra job (single run or sweep job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hc = HydraConfig.get()
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
    return command, get_original_cwd()


def install_hydra_job_subprocess_cmd() -> None:
    """Point Lightning's subprocess launchers at :func:`hydra_job_subprocess_cmd`."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    fabric_launcher._hydra_subprocess_cmd = hydra_job_subprocess_cmd
    pytorch_launcher._hydra_subprocess_cmd = hydra_job_subprocess_cmd
