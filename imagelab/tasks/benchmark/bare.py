"""The bare PyTorch loop the framework is compared with: forward, loss, backward, optimizer step.

It takes the framework run's own network (a copy), loss, optimizer settings, data loader, device and
precision, so the only difference left is the framework around the step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from imagelab.tasks.benchmark.plan import ModelCase
from imagelab.tasks.benchmark.timing import sync
from lightning_modules.denoiser import DEFAULT_OPTIMIZER, DenoiserModule
from lightning_modules.optim import build_optimizer


def bare_parts(module: Any) -> tuple[torch.nn.Module, Callable[[Any, Any], torch.Tensor], dict[str, Any]]:
    """(network copy, loss(out, target), optimizer config) of a framework LightningModule."""
    net = copy.deepcopy(module.net)
    if isinstance(net, torch.nn.Module) and hasattr(net, "_compiled_call_impl"):
        net._compiled_call_impl = (
            None  # the bare loop runs eager (compile is measured in the fast-path table)
        )
    optimizer = dict(module.hparams.get("optimizer") or DEFAULT_OPTIMIZER)  # the model.optimizer node
    if isinstance(module, DenoiserModule):
        return net, module.loss_fn, optimizer
    smoothing = float(module.hparams.get("label_smoothing", 0.0) or 0.0)
    return net, lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing), optimizer


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    return nullcontext


def bare_run(trainer: pl.Trainer, case: ModelCase) -> dict[str, Any]:
    """The same network, data loader, device and precision in a plain PyTorch loop; returns steps/s."""
    device = trainer.strategy.root_device
    net, loss_fn, opt_cfg = bare_parts(trainer.lightning_module)
    net = net.to(device).train()
    optimizer = build_optimizer(opt_cfg, net)
    precision = str(trainer.precision)
    autocast = _autocast(precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision.startswith("16") else None
    loader = trainer.datamodule.train_dataloader()
    start = last = None
    durations: list[float] = []  # per timed step, wall clock and process CPU, as StepTimer records them
    cpu_durations: list[float] = []
    for i, batch in enumerate(loader):
        now, cpu = time.perf_counter(), time.process_time()
        if case.warmup < i <= case.warmup + case.steps and device.type != "cuda":
            assert last is not None
            durations.append(now - last[0])
            cpu_durations.append(cpu - last[1])
        last = (now, cpu)
        if i == case.warmup:
            sync(device)
            start = time.perf_counter()
        elif i == case.warmup + case.steps:
            sync(device)
            assert start is not None
            return {
                "steps_per_s": case.steps / (time.perf_counter() - start),
                "durations": durations,
                "cpu_durations": cpu_durations,
            }
        x, y = (t.to(device, non_blocking=True) for t in batch[:2])
        with autocast():
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    raise RuntimeError(f"{case.name}: the loader ended before {case.warmup + case.steps} steps")
