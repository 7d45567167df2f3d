"""The benchmark of ``scripts/benchmark.py``: what the framework costs and where the time goes.

Sections (``sections`` in conf/benchmark.yaml), all measured in one process except the start-up timings:

* ``overhead``: training steps/s of each model through the framework (``tasks.training.train``
  with the run's own Trainer, callbacks and logger configuration) and through a bare PyTorch loop (forward,
  loss, backward, optimizer step) on the same network, data loader, batch size, device and precision;
  framework and bare runs alternate (F B F B ...), each timed over ``steps`` steps after ``warmup`` steps;
  the ratio is the median over the adjacent (framework, bare) pairs of bare / framework steps/s, which a
  shared machine's other jobs disturb least; the ratios of the best and of the median steps/s are reported too.
* ``data``: images/s of each data module's training loader alone (batches moved to the device as Lightning
  does), against the images/s the matching model consumes (framework steps/s x batch size).
* ``startup``: wall time of ``scripts/train.py --cfg job`` and of a cold ``scripts/train.py`` start (a new
  Python process) to its first training step; also the in-process time from ``train()`` to its first step.
* ``fast_paths``: framework steps/s with each GPU fast path alone and all together (GPU plan: ResNet-18 and
  ViT-S/4 at batch 512 on CIFAR-shaped data), and GPU-resident data against the DataLoader path.
* memory: peak host RSS of this process and of the cold training run, peak device memory per run on GPU.

Plans (``mode``): ``smoke`` (toy sizes, under a minute on CPU: checks the harness), ``cpu`` (the default
denoiser and a timm ResNet-18 on 2 CPU cores, a few minutes), ``gpu`` (adds the fast-path table). Goals are
reported as pass/fail, never asserted. The report goes to ``report.json`` and ``report.md`` in the run dir.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from experiment_utils.atomic import atomic_write_json, atomic_write_text
from experiment_utils.errors import UserError
from tasks.step_overhead import lightning_alone_run, overhead_ms, tiny_cases, window_overhead_ms

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "scripts" / "train.py"
MODES: tuple[str, ...] = ("auto", "smoke", "cpu", "gpu")
SECTIONS: tuple[str, ...] = ("overhead", "data", "startup", "fast_paths")
GOALS = {
    "overhead_ratio": 1.03,  # bare steps/s over framework steps/s, on CPU
    "cfg_job_s": 1.5,  # scripts/train.py --cfg job
    "data_over_model": 3.0,  # data images/s over model images/s, on GPU
}


# ----------------------------------------------------------------------------------------------- callbacks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Time training steps ``warmup`` .. ``warmup + steps`` (batch start to batch start).

    ``first_step`` is the ``time.perf_counter()`` of the first batch start; ``steps_per_s`` the result;
    ``durations`` / ``cpu_durations`` each timed step's wall-clock / process CPU seconds
    (``tasks.step_overhead``; on CPU only: a CUDA step's duration is not known without a sync per
    step); ``peak_device_bytes`` the peak CUDA memory of the timed steps (0 on CPU).
    """

    def __init__(self, warmup: int = 3, steps: int = 10) -> None:
        super().__init__()
        self.warmup, self.steps = int(warmup), int(steps)
        self.count = 0
        self.first_step: float | None = None
        self.start: float | None = None
        self.steps_per_s: float | None = None
        self.durations: list[float] = []
        self.cpu_durations: list[float] = []
        self._last: tuple[float, float] | None = None
        self.peak_device_bytes = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Record the boundaries of the timed window; ask the trainer to stop after it."""
        now, cpu = time.perf_counter(), time.process_time()
        device = trainer.strategy.root_device
        if self.count == 0:
            self.first_step = now
        if self.warmup < self.count <= self.warmup + self.steps and device.type != "cuda":
            assert self._last is not None
            self.durations.append(now - self._last[0])
            self.cpu_durations.append(cpu - self._last[1])
        self._last = (now, cpu)
        if self.count == self.warmup:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            self.start = time.perf_counter()
        elif self.count == self.warmup + self.steps:
            _sync(device)
            assert self.start is not None
            self.steps_per_s = self.steps / (time.perf_counter() - self.start)
            if device.type == "cuda":
                self.peak_device_bytes = int(torch.cuda.max_memory_allocated(device))
        self.count += 1


def peak_rss_of_this_process() -> int | None:
    """Peak resident memory of this process image in bytes (Linux ``VmHWM``; None elsewhere).

    Unlike ``getrusage``'s ``ru_maxrss``, this is not inflated by the parent's memory that a forked child
    counts until it calls ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class FirstStepTimer(pl.Callback):
    """Write the wall-clock time (``time.time()``) of the first training batch to ``path`` as JSON.

    Used by the start-up section: ``+callbacks.first_step_timer._target_=...FirstStepTimer``. At the end of
    the run the file also gets the process's peak resident memory (``peak_rss_bytes``).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.record: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Record the first batch start (rank zero)."""
        if not self.record and trainer.is_global_zero:
            self.record = {"first_step_unix": time.time(), "peak_rss_bytes": peak_rss_of_this_process()}
            atomic_write_json(Path(self.path), self.record)

    def teardown(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        """Add the peak resident memory of the whole run."""
        if self.record and trainer.is_global_zero:
            self.record["peak_rss_bytes"] = peak_rss_of_this_process()
            atomic_write_json(Path(self.path), self.record)


# ---------------------------------------------------------------------------------------------------- plans


@dataclass
class ModelCase:
    """One model measured in the overhead section: train-config overrides and its timing window."""

    name: str
    overrides: list[str]
    batch_size: int
    warmup: int
    steps: int
    kind: str = "denoiser"  # denoiser | classifier (which data modules it is compared with)
    overhead_goal_ms: float | None = None  # near-zero-compute rows: goal for framework - bare, ms/step


@dataclass
class DataCase:
    """One data module measured alone: train-config overrides (data group) and the model it feeds."""

    name: str
    overrides: list[str]
    batch_size: int
    batches: int
    feeds: str  # ModelCase.name whose images/s it is compared with
    warmup: int = 2


@dataclass
class Plan:
    """Everything one benchmark mode measures."""

    mode: str
    device: str
    repeats: int
    models: list[ModelCase]
    data: list[DataCase]
    cfg_job_repeats: int
    first_step_repeats: int
    fast_path_models: list[ModelCase] = field(default_factory=list)
    fast_path_variants: list[tuple[str, list[str]]] = field(default_factory=list)
    resident_vs_loader: list[tuple[str, list[str]]] = field(default_factory=list)
    resident_base: list[str] = field(default_factory=list)  # fast paths of the resident-vs-loader runs
    fast_path_repeats: int = 1
    cifar_images: tuple[int, int] = (512, 128)  # synthetic CIFAR-shaped train / test images
    framework_overrides: list[str] = field(default_factory=list)
    logger: str = "wandb"

    def base_overrides(self) -> list[str]:
        """The framework's own configuration (default callbacks and logger; W&B offline, nothing uploaded)."""
        base = ["tags=[benchmark]", "test=false"]
        if self.logger == "wandb":
            base += ["logger.wandb.mode=offline", "logger.wandb.project=imagelab-benchmark"]
        else:
            base.append(f"logger={self.logger}")
        return [*base, *self.framework_overrides]


def merge_overrides(*groups: list[str]) -> list[str]:
    """Concatenate override lists; a later ``key=value`` replaces an earlier one of the same key."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged[override.split("=", 1)[0]] = override
    return list(merged.values())


def _classifier(
    backbone: str, data_root: str, batch: int, workers: int, extra: list[str] | None = None
) -> list[str]:
    return [
        "model=classifier",
        f"model.backbone={backbone}",
        "model.pretrained=false",
        "data=cifar10",
        f"data.root={data_root}",
        "data.download=false",
        f"data.batch_size={batch}",
        f"data.eval_batch_size={batch}",
        f"data.num_workers={workers}",
        *(extra or []),
    ]


VIT_S = ["model.timm_kwargs={img_size:32,patch_size:4}"]  # ViT-S/4 on 32 px: 64 tokens


def make_plan(mode: str, data_root: Path, repeats: int | None) -> Plan:
    """The cases of ``mode`` (smoke | cpu | gpu) with CIFAR-shaped files under ``data_root``."""
    root = str(data_root)
    if mode == "smoke":
        denoiser = ModelCase(
            "denoiser (toy DnCNN)",
            [
                "model.net.depth=3",
                "model.net.width=8",
                "data.patch_size=24",
                "data.batch_size=16",
                "data.patches_per_epoch=256",
                "data.eval_crop=32",
                "model.num_panels=0",
            ],
            16,
            2,
            4,
        )
        classifier = ModelCase(
            "timm test_resnet",
            _classifier("test_resnet", root, 32, 0, ["data.val_size=64"]),
            32,
            2,
            4,
            "classifier",
        )
        quick = ["++trainer.num_sanity_val_steps=0"]
        return Plan(
            mode="smoke",
            device="cpu",
            repeats=repeats or 1,
            models=[denoiser, classifier, *tiny_cases(root, steps=10, warmup=2)],
            data=[
                DataCase("denoise_photos (loader)", ["data.patch_size=24"], 16, 4, denoiser.name),
                DataCase(
                    "denoise_photos_gpu (resident)",
                    ["data=denoise_photos_gpu", "data.patch_size=24"],
                    16,
                    4,
                    denoiser.name,
                ),
                DataCase("cifar10 (loader)", classifier.overrides, 32, 4, classifier.name),
                DataCase(
                    "cifar10_gpu (resident)",
                    [*classifier.overrides, "data=cifar10_gpu"],
                    32,
                    4,
                    classifier.name,
                ),
            ],
            cfg_job_repeats=1,
            first_step_repeats=0,
            fast_path_models=[classifier],
            fast_path_variants=[
                ("baseline (fp32, speed=off)", ["trainer.precision=32-true", "speed=off"]),
                ("+ channels_last", ["trainer.precision=32-true", "speed=off", "speed.channels_last=true"]),
                ("+ bf16-mixed", ["trainer.precision=bf16-mixed", "speed=off"]),
            ],
            resident_vs_loader=[("loader", []), ("resident", ["data=cifar10_gpu"])],
            resident_base=["trainer.precision=32-true", "speed=off"],
            framework_overrides=quick,
            logger="csv",
        )
    if mode == "cpu":
        denoiser = ModelCase("denoiser (default DnCNN 10x32, batch 32)", [], 32, 3, 25)
        resnet = ModelCase(
            "timm resnet18 (CIFAR 32 px, batch 64)",
            _classifier("resnet18", root, 64, 0, ["data.val_size=500"]),
            64,
            2,
            12,
            "classifier",
        )
        return Plan(
            mode="cpu",
            device="cpu",
            repeats=repeats or 5,
            models=[denoiser, resnet, *tiny_cases(root, steps=500, warmup=20)],
            data=[
                DataCase("denoise_photos (loader, 0 workers)", [], 32, 30, denoiser.name),
                DataCase("denoise_photos_gpu (resident)", ["data=denoise_photos_gpu"], 32, 30, denoiser.name),
                DataCase("cifar10 (loader, 0 workers)", resnet.overrides, 64, 30, resnet.name),
                DataCase(
                    "cifar10_gpu (resident)", [*resnet.overrides, "data=cifar10_gpu"], 64, 30, resnet.name
                ),
            ],
            cfg_job_repeats=5,
            first_step_repeats=2,
            cifar_images=(5000, 1000),
        )
    # gpu: CIFAR-shaped data at batch 512, workers for the loader path
    workers = min(8, os.cpu_count() or 1)
    denoiser = ModelCase("denoiser (default DnCNN 10x32, batch 32)", ["trainer=gpu"], 32, 10, 50)
    resnet = ModelCase(
        "timm resnet18 (CIFAR 32 px, batch 512)",
        ["trainer=gpu", *_classifier("resnet18", root, 512, workers, ["data.val_size=1000"])],
        512,
        10,
        30,
        "classifier",
    )
    vit = ModelCase(
        "timm ViT-S/4 (CIFAR 32 px, batch 512)",
        [
            "trainer=gpu",
            *_classifier("vit_small_patch16_224", root, 512, workers, ["data.val_size=1000", *VIT_S]),
        ],
        512,
        10,
        30,
        "classifier",
    )
    resident = ["data=cifar10_gpu"]
    fp32_off = ["trainer.precision=32-true", "speed=off"]
    return Plan(
        mode="gpu",
        device="cuda",
        repeats=repeats or 3,
        models=[denoiser, resnet, *tiny_cases(root, steps=500, warmup=50, extra=["trainer=gpu"])],
        data=[
            DataCase("denoise_photos (loader, 0 workers)", [], 32, 50, denoiser.name),
            DataCase(
                f"denoise_photos (loader, {workers} workers)",
                [f"data.num_workers={workers}"],
                32,
                50,
                denoiser.name,
            ),
            DataCase("denoise_photos_gpu (resident)", ["data=denoise_photos_gpu"], 32, 50, denoiser.name),
            DataCase(f"cifar10 (loader, {workers} workers)", resnet.overrides, 512, 30, resnet.name),
            DataCase("cifar10_gpu (resident)", [*resnet.overrides, *resident], 512, 30, resnet.name),
        ],
        cfg_job_repeats=5,
        first_step_repeats=2,
        fast_path_models=[
            ModelCase(resnet.name, [*resnet.overrides, *resident], 512, 15, 30, "classifier"),
            ModelCase(vit.name, [*vit.overrides, *resident], 512, 15, 30, "classifier"),
        ],
        fast_path_variants=[
            ("baseline (fp32, speed=off)", fp32_off),
            ("+ bf16-mixed", ["trainer.precision=bf16-mixed", "speed=off"]),
            ("+ channels_last", [*fp32_off, "speed.channels_last=true"]),
            ("+ cudnn_benchmark", [*fp32_off, "speed.cudnn_benchmark=true"]),
            ("+ TF32 matmuls", [*fp32_off, "speed.matmul_precision=high"]),
            ("+ torch.compile", [*fp32_off, "speed.compile=true"]),
            ("all but compile (bf16 + speed=default)", ["trainer.precision=bf16-mixed", "speed=default"]),
            ("all (bf16 + speed=compile)", ["trainer.precision=bf16-mixed", "speed=compile"]),
        ],
        resident_vs_loader=[("loader", ["data=cifar10"]), ("resident", resident)],
        resident_base=["trainer.precision=bf16-mixed", "speed=default"],
        fast_path_repeats=repeats or 2,
        cifar_images=(25000, 2000),
    )


# -------------------------------------------------------------------------------------------- measurement


def compose_train(overrides: list[str]) -> Any:
    """The train config with ``overrides``, composed like ``scripts/train.py`` (inside this Hydra app)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        raise UserError("run the benchmark through scripts/benchmark.py (it needs the Hydra app's config)")
    return compose(config_name="train", overrides=overrides)


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss_bytes() -> int:
    peak = peak_rss_of_this_process()
    return peak if peak is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def framework_run(case: ModelCase, extra: list[str], run_dir: Path, plan: Plan) -> dict[str, Any]:
    """Train ``case`` through the framework for its timing window; returns steps/s and the trainer."""
    from tasks.runner import finish_wandb
    from tasks.training import train

    overrides = merge_overrides(
        plan.base_overrides(),
        case.overrides,
        extra,
        [
            f"paths.output_dir={run_dir}",
            # one short epoch: the timed window, then the run's own validation (2 batches) and checkpoint
            "trainer.max_epochs=1",
            f"++trainer.limit_train_batches={case.warmup + case.steps + 1}",
            "++trainer.limit_val_batches=2",
            "+callbacks.bench_timer._target_=tasks.benchmarking.StepTimer",
            f"+callbacks.bench_timer.warmup={case.warmup}",
            f"+callbacks.bench_timer.steps={case.steps}",
        ],
    )
    cfg = compose_train(overrides)
    started = time.perf_counter()
    try:
        result = train(cfg)
    finally:
        finish_wandb()
    trainer = result["trainer"]
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
    if timer.steps_per_s is None:
        raise RuntimeError(
            f"{case.name}: the epoch ended before {case.warmup + case.steps} steps; use more data per epoch"
        )
    return {
        "steps_per_s": timer.steps_per_s,
        "durations": timer.durations,
        "cpu_durations": timer.cpu_durations,
        "first_step_s": (timer.first_step or started) - started,
        "peak_device_bytes": timer.peak_device_bytes,
        "trainer": trainer,
    }


def _bare_parts(module: Any) -> tuple[torch.nn.Module, Callable[[Any, Any], torch.Tensor], dict[str, Any]]:
    """(network copy, loss(out, target), optimizer config) of a framework LightningModule."""
    import torch.nn.functional as F

    from lightning_modules.denoiser import DEFAULT_OPTIMIZER, DenoiserModule

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
    from lightning_modules.optim import build_optimizer

    device = trainer.strategy.root_device
    net, loss_fn, opt_cfg = _bare_parts(trainer.lightning_module)
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
            _sync(device)
            start = time.perf_counter()
        elif i == case.warmup + case.steps:
            _sync(device)
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


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def overhead_section(plan: Plan, work: Path, keep_runs: bool) -> list[dict[str, Any]]:
    """Framework vs bare loop for every model of the plan, alternating F B F B ..."""
    rows = []
    for m, case in enumerate(plan.models):
        fw, bare, first = [], [], []
        fw_durations, bare_durations, fw_cpu, bare_cpu = [], [], [], []
        alone: dict[str, list] = {"steps_per_s": [], "durations": [], "cpu_durations": []}
        peak_dev = 0
        for rep in range(plan.repeats):
            run_dir = work / f"overhead_{m}_{rep}"
            res = framework_run(case, [], run_dir, plan)
            fw.append(res["steps_per_s"])
            fw_durations.append(res["durations"])
            fw_cpu.append(res["cpu_durations"])
            first.append(res["first_step_s"])
            peak_dev = max(peak_dev, res["peak_device_bytes"])
            bare_res = bare_run(res["trainer"], case)
            bare.append(bare_res["steps_per_s"])
            bare_durations.append(bare_res["durations"])
            bare_cpu.append(bare_res["cpu_durations"])
            if case.overhead_goal_ms is not None:  # near-zero rows: Lightning alone as a third reference
                for key, value in lightning_alone_run(res["trainer"], case).items():
                    alone[key].append(value)
            del res
            if not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
        ratios = [b / f for b, f in zip(bare, fw, strict=True)]
        rows.append(
            {
                "model": case.name,
                "batch_size": case.batch_size,
                "timed_steps": case.steps,
                "repeats": plan.repeats,
                "framework_steps_per_s": fw,
                "bare_steps_per_s": bare,
                "framework_median": _median(fw),
                "bare_median": _median(bare),
                "framework_best": max(fw),
                "bare_best": max(bare),
                # median over adjacent (framework, bare) pairs: robust to other jobs slowing single windows
                "ratio": _median(ratios),
                "ratio_of_best": max(bare) / max(fw),
                "ratio_of_medians": _median(bare) / _median(fw),
                "ratio_per_pair": ratios,
                "framework_images_per_s": max(fw) * case.batch_size,
                "first_step_in_process_s": _median(first),
                "peak_device_bytes": peak_dev,
                "rss_after_bytes": _rss_bytes(),
                "overhead_goal_ms": case.overhead_goal_ms,
                # framework - bare in ms/step: from per-step durations on CPU, from the synced windows on CUDA
                **(
                    overhead_ms(fw_durations, bare_durations, fw_cpu, bare_cpu)
                    if all(fw_durations) and all(bare_durations)
                    else window_overhead_ms(fw, bare)
                ),
                "lightning_alone": _lightning_alone(alone, bare, bare_durations, bare_cpu),
            }
        )
        cpu_fw, cpu_bare = rows[-1].get("framework_cpu_ms_per_step"), rows[-1].get("bare_cpu_ms_per_step")
        # the ratio in process CPU time: the work per step, hardly moved by other jobs on a shared machine
        rows[-1]["cpu_ratio"] = cpu_fw / cpu_bare if cpu_fw and cpu_bare else math.nan
        log.info("overhead %s: ratio %.3f", case.name, rows[-1]["ratio"])
    return rows


def _lightning_alone(
    alone: dict[str, list], bare: list[float], bare_durations: list[list[float]], bare_cpu: list[list[float]]
) -> dict[str, Any] | None:
    """Lightning alone - bare loop (ms/step) from ``lightning_alone_run``'s records; None when not measured."""
    if not alone["steps_per_s"]:
        return None
    if all(alone["durations"]) and all(bare_durations):
        return overhead_ms(alone["durations"], bare_durations, alone["cpu_durations"], bare_cpu)
    return window_overhead_ms(alone["steps_per_s"], bare)


def data_section(plan: Plan, model_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images/s of each data module's training loader alone, against what its model consumes."""
    from experiment_utils.instantiation import instantiate_node

    device = torch.device(plan.device)
    consumed = {row["model"]: row["framework_images_per_s"] for row in model_rows}
    rows = []
    for case in plan.data:
        cfg = compose_train(merge_overrides(case.overrides, [f"data.batch_size={case.batch_size}"]))
        torch.manual_seed(0)
        datamodule = instantiate_node(cfg.data, "data")
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        start, images = None, 0
        for seen, batch in enumerate(_cycle(loader)):
            if seen == case.warmup:
                _sync(device)
                start = time.perf_counter()
            elif seen == case.warmup + case.batches:
                break
            x, _ = (t.to(device, non_blocking=True) for t in batch[:2])
            if seen >= case.warmup:
                images += len(x)
        _sync(device)
        assert start is not None
        per_s = images / (time.perf_counter() - start)
        model = consumed.get(case.feeds, math.nan)
        rows.append(
            {
                "data": case.name,
                "batch_size": case.batch_size,
                "images_per_s": per_s,
                "model": case.feeds,
                "model_images_per_s": model,
                "data_over_model": per_s / model if model and not math.isnan(model) else math.nan,
            }
        )
        del loader, datamodule
    return rows


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def startup_section(plan: Plan, work: Path) -> dict[str, Any]:
    """Wall time of ``--cfg job`` and of a cold training start to its first step (new Python processes)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    cfg_job = []
    for _ in range(plan.cfg_job_repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), "--cfg", "job"],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
        )
        cfg_job.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"--cfg job failed: {proc.stderr[-2000:]}")
    first, peaks = [], []
    overrides = merge_overrides(
        plan.base_overrides(),
        plan.models[0].overrides,
        [
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=1",
            "++trainer.limit_val_batches=1",
            "+callbacks.first_step_timer._target_=tasks.benchmarking.FirstStepTimer",
        ],
    )
    for rep in range(plan.first_step_repeats):
        stamp = work / f"first_step_{rep}.json"
        cwd = work / f"startup_{rep}"
        cwd.mkdir(parents=True, exist_ok=True)
        started = time.time()
        proc = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), *overrides, f"+callbacks.first_step_timer.path={stamp}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
        )
        if proc.returncode != 0 or not stamp.is_file():
            raise RuntimeError(f"the start-up run failed: {proc.stderr[-3000:]}")
        record = json.loads(stamp.read_text())
        first.append(record["first_step_unix"] - started)
        peaks.append(record.get("peak_rss_bytes") or 0)
        shutil.rmtree(cwd, ignore_errors=True)
    return {
        "cfg_job_s": cfg_job,
        "cfg_job_median_s": _median(cfg_job),
        "first_step_cold_s": first,
        "first_step_cold_median_s": _median(first),
        "first_step_model": plan.models[0].name if first else None,
        "peak_rss_cold_run_bytes": max(peaks) if peaks and max(peaks) > 0 else None,
    }


def fast_path_section(
    plan: Plan,
    work: Path,
    keep_runs: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Framework steps/s per fast-path variant, and GPU-resident data against the loader path.

    ``progress`` gets the rows measured so far after every variant (to write a partial report).
    """
    variants: list[dict[str, Any]] = []
    resident: list[dict[str, Any]] = []
    for m, case in enumerate(plan.fast_path_models):
        base = None
        for v, (name, extra) in enumerate(plan.fast_path_variants):
            sps, peaks = [], []
            for rep in range(plan.fast_path_repeats):
                run_dir = work / f"fast_{m}_{v}_{rep}"
                res = framework_run(case, extra, run_dir, plan)
                sps.append(res["steps_per_s"])
                peaks.append(res["peak_device_bytes"])
                del res
                if not keep_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
            median = _median(sps)
            base = median if base is None else base
            variants.append(
                {
                    "model": case.name,
                    "variant": name,
                    "overrides": extra,
                    "steps_per_s": median,
                    "images_per_s": median * case.batch_size,
                    "speedup": median / base,
                    "peak_device_bytes": max(peaks),
                }
            )
            if progress is not None:
                progress({"variants": variants, "resident_vs_loader": resident})
        for name, extra in plan.resident_vs_loader:
            run_dir = work / f"resident_{m}_{name}"
            res = framework_run(case, [*plan.resident_base, *extra], run_dir, plan)
            resident.append(
                {
                    "model": case.name,
                    "data_path": name,
                    "overrides": [*plan.resident_base, *extra],
                    "steps_per_s": res["steps_per_s"],
                    "images_per_s": res["steps_per_s"] * case.batch_size,
                }
            )
            del res
            if not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
    return {"variants": variants, "resident_vs_loader": resident}


def select_variants(
    variants: list[tuple[str, Any]], words: list[str], option: str = "fast_path_variants"
) -> list[tuple[str, Any]]:
    """The (name, item) pairs whose name contains one of ``words``; a UserError naming ``option`` when none does."""
    words = [str(w) for w in words]
    kept = [v for v in variants if any(w in v[0] for w in words)]
    if not kept:
        names = "; ".join(name for name, _ in variants)
        raise UserError(f"{option}={words} matches nothing in this mode: {names}")
    return kept


def write_cifar_like(root: Path, n_train: int, n_test: int) -> Path:
    """Random CIFAR-10-shaped data in the official pickle format under ``root`` (no download)."""
    import numpy as np

    from datamodules.cifar10_reader import write_cifar10_like

    if not (root / "cifar-10-batches-py").is_dir():
        rng = np.random.default_rng(0)
        train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
        test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
        write_cifar10_like(
            root,
            train,
            np.arange(n_train) % 10,
            test,
            np.arange(n_test) % 10,
            [f"class{i}" for i in range(10)],
        )
    return root


@contextmanager
def _torch_flags() -> Iterator[None]:
    """Restore process-wide flags the fast-path runs change."""
    benchmark, matmul = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch.set_float32_matmul_precision(matmul)


def _machine() -> dict[str, Any]:
    import lightning

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def run_benchmark(
    mode: str = "auto",
    out_dir: str | Path = ".",
    repeats: int | None = None,
    sections: list[str] | None = None,
    keep_runs: bool = False,
    threads: int | None = None,
    fast_path_variants: list[str] | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """Run the plan of ``mode``, write ``report.json`` and ``report.md`` to ``out_dir``; return the report.

    ``threads`` sets torch's intra-op threads (None = torch's default); one thread makes CPU timings on a
    machine shared with other jobs much steadier (two OpenMP threads stall each other when one is descheduled).
    ``fast_path_variants``: run only the fast-path variants whose name contains one of these words (None = all;
    the first one kept is the speed-up baseline). ``models``: measure only the overhead-section models whose
    name contains one of these words (None = all), e.g. ``["tiny"]`` for the per-step overhead rows.
    """
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    sections = list(sections if sections is not None else SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise UserError(f"unknown benchmark section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise UserError(f"repeats must be a positive integer or null, got {repeats!r}")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise UserError(f"threads must be a positive integer or null, got {threads!r}")
        torch.set_num_threads(threads)
    if mode == "auto":
        mode = "gpu" if torch.cuda.is_available() else "cpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise UserError("mode=gpu needs a CUDA GPU; use mode=cpu or mode=smoke here")
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    plan = make_plan(mode, work / "cifar", repeats)
    if fast_path_variants is not None:
        plan.fast_path_variants = select_variants(plan.fast_path_variants, fast_path_variants)
    if models is not None:
        names = [(case.name, case) for case in plan.models]
        plan.models = [case for _, case in select_variants(names, models, "models")]
    write_cifar_like(work / "cifar", *plan.cifar_images)
    report: dict[str, Any] = {
        "mode": mode,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": _machine(),
        "sections": sections,
    }
    # the report is written after every section (and fast-path variant) with "partial": true, so a run
    # stopped by a time limit (scripts/gpu_check.sh) still leaves what it measured
    with _torch_flags():
        models = overhead_section(plan, work, keep_runs) if {"overhead", "data"} & set(sections) else []
        if "overhead" in sections:
            report["overhead"] = models
            _write_report(report, out, started, partial=True)
        if "data" in sections:
            report["data"] = data_section(plan, models)
        if "startup" in sections:
            report["startup"] = startup_section(plan, work)
            _write_report(report, out, started, partial=True)
        if "fast_paths" in sections and plan.fast_path_models:

            def progress(rows: dict[str, Any]) -> None:
                report["fast_paths"] = rows
                _write_report(report, out, started, partial=True)

            report["fast_paths"] = fast_path_section(plan, work, keep_runs, progress)
    if not keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return _write_report(report, out, started, partial=False)


def _write_report(report: dict[str, Any], out: Path, started: float, partial: bool) -> dict[str, Any]:
    """Add memory, load, duration and goals to ``report``; write report.json and report.md atomically."""
    report["partial"] = partial
    report["memory"] = {
        "peak_rss_benchmark_process_bytes": _peak_rss_bytes(),
        "peak_device_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
    }
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["duration_s"] = round(time.time() - started, 1)
    report["goals"] = evaluate_goals(report)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def evaluate_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals as pass/fail rows (``applies`` false where the mode does not measure them)."""
    on_gpu = report["mode"] == "gpu"
    goals = []
    for row in report.get("overhead", []):
        limit_ms = row.get("overhead_goal_ms")
        if limit_ms is not None:  # near-zero-compute rows: the framework's own cost per step
            value = row.get("overhead_ms", math.nan)
            goals.append(
                {
                    "goal": f"framework - bare <= {limit_ms} ms/step on CPU: {row['model']}",
                    "value": None if math.isnan(value) else round(value, 3),
                    "applies": report["mode"] == "cpu",
                    "pass": bool(value <= limit_ms),
                }
            )
            continue
        goals.append(
            {
                "goal": f"framework/bare ratio <= {GOALS['overhead_ratio']} on CPU: {row['model']}",
                "value": round(row["ratio"], 3),
                "applies": report["mode"] == "cpu",
                "pass": row["ratio"] <= GOALS["overhead_ratio"],
            }
        )
    startup = report.get("startup")
    if startup:
        goals.append(
            {
                "goal": f"scripts/train.py --cfg job < {GOALS['cfg_job_s']} s",
                "value": round(startup["cfg_job_median_s"], 3),
                "applies": True,
                "pass": startup["cfg_job_median_s"] < GOALS["cfg_job_s"],
            }
        )
    for row in report.get("data", []):
        goals.append(
            {
                "goal": f"data >= {GOALS['data_over_model']}x model on GPU: {row['data']}",
                "value": None if math.isnan(row["data_over_model"]) else round(row["data_over_model"], 2),
                "applies": on_gpu,
                "pass": bool(row["data_over_model"] >= GOALS["data_over_model"]),
            }
        )
    resident = (report.get("fast_paths") or {}).get("resident_vs_loader", [])
    by_model: dict[str, dict[str, float]] = {}
    for row in resident:
        by_model.setdefault(row["model"], {})[row["data_path"]] = row["steps_per_s"]
    for model, paths in by_model.items():
        if {"loader", "resident"} <= set(paths):
            goals.append(
                {
                    "goal": f"GPU-resident data beats the loader path on GPU: {model}",
                    "value": round(paths["resident"] / paths["loader"], 3),
                    "applies": on_gpu,
                    "pass": paths["resident"] > paths["loader"],
                }
            )
    return goals


# ------------------------------------------------------------------------------------------------- report


def _mb(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:.0f} MB"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _sub(a: Any, b: Any) -> float | None:
    return None if a is None or b is None or math.isnan(a) or math.isnan(b) else a - b


def _overhead_ms_cell(row: dict[str, Any]) -> str:
    value = row.get("overhead_ms", math.nan)
    if value is None or math.isnan(value):
        return "-"
    cell = f"{value:.2f} ({_num(row['framework_ms_per_step'])} - {_num(row['bare_ms_per_step'])})"
    return f"**{cell}**" if row.get("overhead_goal_ms") is not None else cell


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what docs/scaling.md shows)."""
    m = report["machine"]
    lines = [
        f"# Benchmark ({report['mode']} mode)"
        + (
            " - PARTIAL: stopped before the end, the missing rows were not measured"
            if report.get("partial")
            else ""
        ),
        "",
        f"`{report.get('command')}` on {report['started']}, {report['duration_s']} s. Machine: {m['platform']}, "
        f"{m['cpu_count']} CPUs ({m['torch_threads']} torch threads), load average "
        f"{', '.join(f'{v:.1f}' for v in m['load_average'])} before / "
        f"{', '.join(f'{v:.1f}' for v in m.get('load_average_after', []))} after; "
        f"GPU: {m['cuda_device'] or 'none'}; torch {m['torch']}, lightning {m['lightning']}.",
        "",
        "## Goals",
        "",
        "| goal | value | applies here | pass |",
        "| --- | --- | --- | --- |",
    ]
    for g in report["goals"]:
        verdict = ("PASS" if g["pass"] else "FAIL") if g["applies"] else "(not measured in this mode)"
        lines.append(f"| {g['goal']} | {g['value']} | {'yes' if g['applies'] else 'no'} | {verdict} |")
    if report.get("overhead"):
        lines += [
            "",
            "## Framework vs bare PyTorch (training steps/s over alternating repeats: best / median)",
            "",
            "| model | batch | framework | bare loop | ratio bare/framework (median of pairs) | per-pair ratios | "
            "ratio of best / of medians | ratio in CPU time | framework - bare, ms/step | first step in-process |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in report["overhead"]:
            pairs = ", ".join(f"{x:.3f}" for x in r["ratio_per_pair"])
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {_num(r['framework_best'])} / {_num(r['framework_median'])} | "
                f"{_num(r['bare_best'])} / {_num(r['bare_median'])} | **{_num(r['ratio'], 3)}** | {pairs} | "
                f"{_num(r['ratio_of_best'], 3)} / {_num(r['ratio_of_medians'], 3)} | {_num(r.get('cpu_ratio'), 3)} | "
                f"{_overhead_ms_cell(r)} | {_num(r['first_step_in_process_s'])} s |"
            )
        lines += [
            "",
            "framework - bare, ms/step: median over chunks of consecutive steps (each chunk holds its logger "
            "writes) of the step durations of all repeats, framework minus bare loop (CPU only). Ratio in CPU "
            "time: the same medians in process CPU time (framework / bare), the work per step, which other "
            "jobs on a shared machine hardly change.",
        ]
        split = [r for r in report["overhead"] if r.get("lightning_alone")]
        if split:
            lines += [
                "",
                "### Where the per-step overhead goes (near-zero-compute models, ms/step)",
                "",
                "| model | framework - bare (wall / CPU) | Lightning alone - bare (wall / CPU) | "
                "this project's part: framework - Lightning alone (wall / CPU) |",
                "| --- | --- | --- | --- |",
            ]
            for r in split:
                a = r["lightning_alone"]
                own = _sub(r.get("overhead_ms"), a.get("overhead_ms"))
                own_cpu = _sub(r.get("overhead_cpu_ms"), a.get("overhead_cpu_ms"))
                lines.append(
                    f"| {r['model']} | {_num(r.get('overhead_ms'))} / {_num(r.get('overhead_cpu_ms'))} | "
                    f"{_num(a.get('overhead_ms'))} / {_num(a.get('overhead_cpu_ms'))} | {_num(own)} / {_num(own_cpu)} |"
                )
    if report.get("data"):
        lines += [
            "",
            "## Data throughput alone vs what the model consumes (images/s)",
            "",
            "| data module | batch | data alone | model consumes | data / model |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in report["data"]:
            lines.append(
                f"| {r['data']} | {r['batch_size']} | {_num(r['images_per_s'], 0)} | "
                f"{_num(r['model_images_per_s'], 0)} ({r['model']}) | {_num(r['data_over_model'])} |"
            )
    s = report.get("startup")
    if s:
        cold = (
            f"{_num(s['first_step_cold_median_s'])} s" if s["first_step_cold_s"] else "skipped in this mode"
        )
        lines += [
            "",
            "## Start-up",
            "",
            f"- `python scripts/train.py --cfg job`: median {_num(s['cfg_job_median_s'], 3)} s "
            f"({', '.join(f'{v:.2f}' for v in s['cfg_job_s'])})",
            f"- cold `python scripts/train.py` to its first training step ({s['first_step_model'] or '-'}): {cold}"
            f"; peak RSS of that run {_mb(s['peak_rss_cold_run_bytes'])}",
        ]
    fp = report.get("fast_paths")
    if fp:
        lines += [
            "",
            "## Fast paths (framework steps/s)",
            "",
            "| model | variant | steps/s | images/s | speed-up | peak device memory |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in fp["variants"]:
            lines.append(
                f"| {r['model']} | {r['variant']} | {_num(r['steps_per_s'])} | {_num(r['images_per_s'], 0)} | "
                f"{_num(r['speedup'])}x | {_mb(r['peak_device_bytes'])} |"
            )
        if fp["resident_vs_loader"]:
            lines += ["", "| model | data path | steps/s | images/s |", "| --- | --- | --- | --- |"]
            for r in fp["resident_vs_loader"]:
                lines.append(
                    f"| {r['model']} | {r['data_path']} | {_num(r['steps_per_s'])} | {_num(r['images_per_s'], 0)} |"
                )
    mem = report["memory"]
    lines += [
        "",
        "## Memory",
        "",
        f"- peak host RSS of the benchmark process: {_mb(mem['peak_rss_benchmark_process_bytes'])}",
        f"- peak device memory: {_mb(mem['peak_device_bytes'])}",
        "",
    ]
    return "\n".join(lines)
