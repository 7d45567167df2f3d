"""Fail in one line when the trainer asks for GPUs that this machine does not have."""

from __future__ import annotations

from typing import Any

from imagelab.core.errors import UserError

GPU_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(trainer_cfg: Any) -> None:
    """Raise UserError when ``trainer.accelerator`` is ``gpu``/``cuda`` and no CUDA device is visible.

    Lightning would stop with ``MisconfigurationException('No supported gpu backend found!')`` inside a Hydra
    instantiation error; this says what is wrong and which trainer to use instead.
    """
    accelerator = str((trainer_cfg or {}).get("accelerator", "auto")).lower()
    if accelerator not in GPU_ACCELERATORS:
        return
    import torch  # lazy: instantiation imports this module, and tasks import that before the config check

    if not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={accelerator} but no GPU is visible on this machine "
            "(torch.cuda.is_available() is False): use trainer=cpu, or trainer=default (auto: GPU when there is one)"
        )
