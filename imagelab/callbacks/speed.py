"""GPU fast-path switches (config group ``speed``).

``SpeedSwitches`` is a callback that, once the Trainer knows its device and before the strategy moves and
wraps the model, sets:

* ``channels_last``: NHWC memory format for the model's 4-D weights (conv nets on tensor cores run faster;
  the first convolution then produces NHWC activations, so inputs need no conversion);
* ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` (autotune convolution algorithms per input shape);
* ``matmul_precision``: ``torch.set_float32_matmul_precision`` (``high`` = TF32 tensor cores on Ampere+);
* ``compile``: ``torch.compile`` of the network in place (``nn.Module.compile``: parameter names and thus
  checkpoints are unchanged), with ``compile_mode`` / ``compile_backend``.

``auto`` means: on when training on a CUDA device where it is safe (channels_last only for models with 2-D
convolutions; cudnn_benchmark not when ``trainer.deterministic`` is on), and the PyTorch defaults on CPU, so a
CPU run is numerically unchanged. Mixed precision is ``trainer.precision``; pinned memory, workers and
prefetching are data options (``data.pin_memory`` etc.). Lightning already copies batches to CUDA with
``non_blocking=True``, which overlaps the copy with compute when the loader pins memory.

``imagelab.tasks.callback_assembly`` adds it to every training run from ``cfg.speed``. See docs/scaling.md.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from imagelab.callbacks.final_network import build_module_from_data
from imagelab.core.errors import UserError

log = logging.getLogger(__name__)
log_info = rank_zero_only(log.info)  # log.info in the rank-zero process only

AUTO = "auto"
MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "high", "medium")
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _tri_state(name: str, value: Any) -> bool | str:
    """true / false / "auto" -> bool or "auto"; anything else is a UserError."""
    if isinstance(value, bool) or value == AUTO:
        return value
    raise UserError(f"speed.{name} must be true, false or auto, got {value!r}")


def has_conv2d(module: nn.Module) -> bool:
    """True when ``module`` contains a 2-D convolution (where the channels-last format can pay off)."""
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())


def compile_target(module: nn.Module) -> nn.Module:
    """The network to compile inside a LightningModule: its child module with the most parameters.

    Compiling the LightningModule itself would trace ``training_step`` (Lightning redirects ``forward`` to it
    under DDP) together with its logging calls; the network alone compiles cleanly.
    """
    children = [(sum(p.numel() for p in child.parameters()), child) for _, child in module.named_children()]
    children = [(n, child) for n, child in children if n > 0]
    if not children:
        return module
    return max(children, key=lambda item: item[0])[1]


class SpeedSwitches(pl.Callback):
    """Apply the ``speed`` config (channels-last, cuDNN benchmark, TF32 matmuls, torch.compile) to a run.

    Values are true, false or ``auto`` (see the module docstring); ``resolved`` holds what was applied.
    """

    def __init__(
        self,
        channels_last: bool | str = AUTO,
        cudnn_benchmark: bool | str = AUTO,
        matmul_precision: str = AUTO,
        compile: bool = False,
        compile_mode: str = "default",
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        self.channels_last = _tri_state("channels_last", channels_last)
        self.cudnn_benchmark = _tri_state("cudnn_benchmark", cudnn_benchmark)
        if matmul_precision != AUTO and matmul_precision not in MATMUL_PRECISIONS:
            raise UserError(
                f"speed.matmul_precision must be auto or one of {', '.join(MATMUL_PRECISIONS)}, "
                f"got {matmul_precision!r}"
            )
        self.matmul_precision = matmul_precision
        if not isinstance(compile, bool):
            raise UserError(f"speed.compile must be true or false, got {compile!r}")
        self.compile = compile
        if compile_mode not in COMPILE_MODES:
            raise UserError(
                f"speed.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}"
            )
        self.compile_mode = compile_mode
        if not isinstance(compile_backend, str) or not compile_backend:
            raise UserError(
                f"speed.compile_backend must be a backend name (inductor), got {compile_backend!r}"
            )
        self.compile_backend = compile_backend
        self.resolved: dict[str, Any] = {}

    def resolve(self, device: torch.device, module: nn.Module) -> dict[str, Any]:
        """What the switches mean on ``device`` for ``module`` (``auto`` replaced by a value)."""
        cuda = device.type == "cuda"
        channels_last = self.channels_last
        if channels_last == AUTO:
            channels_last = cuda and has_conv2d(module)
        benchmark = self.cudnn_benchmark
        if benchmark == AUTO:
            benchmark = cuda and not torch.are_deterministic_algorithms_enabled()
        matmul = self.matmul_precision
        if matmul == AUTO:
            matmul = "high" if cuda else "highest"
        return {
            "device": device.type,
            "channels_last": bool(channels_last),
            "cudnn_benchmark": bool(benchmark),
            "matmul_precision": matmul,
            "compile": self.compile,
        }

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Apply the switches once per run (also called for the test stage after fitting: no-op then)."""
        if self.resolved:
            return
        build_module_from_data(pl_module, stage)  # the network the switches apply to must be the final one
        module = pl_module
        self.resolved = self.resolve(trainer.strategy.root_device, module)
        torch.backends.cudnn.benchmark = self.resolved["cudnn_benchmark"]
        torch.set_float32_matmul_precision(self.resolved["matmul_precision"])
        if self.resolved["channels_last"]:
            module.to(memory_format=torch.channels_last)
        if self.compile:
            target = compile_target(module)
            kwargs: dict[str, Any] = {"backend": self.compile_backend}
            if self.compile_backend == "inductor" and self.compile_mode != "default":
                kwargs["mode"] = self.compile_mode
            target.compile(**kwargs)
            self.resolved["compiled"] = type(target).__name__
        log_info("speed switches: %s", self.resolved)
        for logger in trainer.loggers:
            logger.log_hyperparams({f"speed/{k}": v for k, v in self.resolved.items()})
