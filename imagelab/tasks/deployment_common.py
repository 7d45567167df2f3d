"""Set-up shared by the export and compress tasks: thread count, the checkpoint, its data, the bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from imagelab.core.errors import UserError
from imagelab.deploy.report import Bench
from imagelab.deploy.source import DeploySource, open_source
from imagelab.tasks.deployment_data import datamodule_for, sample_inputs, test_batches


def positive_int(cfg: DictConfig, key: str) -> int:
    """``cfg[key]`` as an integer >= 1 (UserError otherwise)."""
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def prepare(cfg: DictConfig) -> tuple[DeploySource, Any, Bench, Path]:
    """Open ``cfg.ckpt_path`` and its test split; returns (source, datamodule, bench, output folder)."""
    bench_cfg = cfg.bench
    batch, repeats = positive_int(bench_cfg, "batch"), positive_int(bench_cfg, "repeats")
    if cfg.get("threads") is not None:
        torch.set_num_threads(positive_int(cfg, "threads"))
    if not cfg.get("ckpt_path"):
        raise UserError("ckpt_path is required: a checkpoint written by scripts/train.py")
    source = open_source(str(cfg.ckpt_path))
    datamodule = datamodule_for(source, "fit")
    inputs = sample_inputs(datamodule, batch)
    batches = list(test_batches(datamodule)) if bench_cfg.get("metric", True) else None
    out_dir = Path(str(cfg.get("output_dir") or cfg.paths.output_dir)).expanduser()
    return source, datamodule, Bench(source.kind, inputs, repeats, batches), out_dir


def bench_info(source: DeploySource, bench: Bench, **extra: Any) -> dict[str, Any]:
    """The run facts printed under the report's table."""
    return {
        "checkpoint": str(source.path),
        "model": source.kind.name,
        "latency inputs": f"real test images of shape {tuple(bench.inputs.shape[1:])}, batch 1 and {len(bench.inputs)}",
        "repeats": bench.repeats,
        "test metric": "on the whole test split"
        if bench.test_batches is not None
        else "off (bench.metric=false)",
        **extra,
    }
