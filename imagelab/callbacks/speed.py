"""GPU fast-path switches (config group ``speed``) and the optional learning-rate scaling (``lr_scaling``).

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

``framework_callbacks(cfg)`` builds the callbacks ``imagelab.tasks.training.train`` adds to every run from
``cfg.speed`` and ``cfg.lr_scaling``. See docs/scaling.md.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from imagelab.callbacks.run_config import build_module_from_data
from imagelab.config.instantiation import instantiate_node
from imagelab.core.distributed import LR_SCALING_RULES, lr_scale_factor
from imagelab.core.errors import UserError
from imagelab.core.plain_config import check_int

log = logging.getLogger(__name__)

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
        if trainer.is_global_zero:
            log.info("speed switches: %s", self.resolved)
        for logger in trainer.loggers:
            logger.log_hyperparams({f"speed/{k}": v for k, v in self.resolved.items()})


class LRScaling(pl.Callback):
    """Scale every optimizer's learning rate with the global batch when fitting starts (off by default).

    global batch = per-device batch (``datamodule.batch_size``) x devices x nodes x accumulate_grad_batches;
    ``base_batch_size`` is the global batch the configured LR was tuned for (None = one device without
    accumulation, i.e. ``datamodule.batch_size``). ``rule``: none (x1), linear (x k) or sqrt (x sqrt(k)) with
    k = global / base batch. Applied once, on ``on_fit_start``, to each param group's ``lr`` / ``initial_lr``
    and to the schedulers' ``base_lrs``; a resumed run then gets the saved (already scaled) optimizer and
    scheduler state from its checkpoint, restored by Lightning after this hook.
    """

    def __init__(self, rule: str = "none", base_batch_size: int | None = None) -> None:
        super().__init__()
        if rule not in LR_SCALING_RULES:
            raise UserError(f"unknown lr_scaling.rule {rule!r}; valid rules: {', '.join(LR_SCALING_RULES)}")
        check_int("lr_scaling.base_batch_size", base_batch_size, 1, allow_none=True)
        self.rule = rule
        self.base_batch_size = base_batch_size
        self.factor: float = 1.0
        self.global_batch: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute the factor from the run's world size and batch and multiply the learning rates."""
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if not isinstance(per_device, int):
            raise UserError(
                "lr_scaling needs a datamodule with an integer batch_size; use lr_scaling.rule=none"
            )
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        self.global_batch = per_device * int(trainer.world_size) * accumulate
        base = self.base_batch_size if self.base_batch_size is not None else per_device
        self.factor = lr_scale_factor(self.rule, self.global_batch, base)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.factor
                if "initial_lr" in group:
                    group["initial_lr"] *= self.factor
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * self.factor for lr in config.scheduler.base_lrs]
        if trainer.is_global_zero:
            log.info(
                "lr_scaling %s: global batch %d (base %d): learning rates x %.4g",
                self.rule,
                self.global_batch,
                base,
                self.factor,
            )
        for logger in trainer.loggers:
            logger.log_hyperparams({"lr_scaling/factor": self.factor, "lr_scaling/batch": self.global_batch})


def framework_callbacks(cfg: Any) -> list[pl.Callback]:
    """The callbacks every training run gets from ``cfg.speed`` and ``cfg.lr_scaling`` (absent keys: none)."""
    callbacks: list[pl.Callback] = []
    speed = cfg.get("speed")
    if speed is not None:
        callbacks.append(instantiate_node(speed, "speed"))
    scaling = cfg.get("lr_scaling")
    if scaling is not None and scaling.get("rule", "none") != "none":
        callbacks.append(LRScaling(scaling.get("rule"), scaling.get("base_batch_size")))
    return callbacks
