"""The compress task: int8 quantisation (onnxruntime) and/or structured pruning (torch-pruning) of a
checkpoint, every variant measured against fp32 in one trade-off report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig

from imagelab.core.atomic import atomic_write
from imagelab.core.errors import UserError
from imagelab.deploy.export import export_onnx, export_safetensors
from imagelab.deploy.exported_model import ExportedModel
from imagelab.deploy.measure import exported_runner, onnx_parameters, torch_runner
from imagelab.deploy.prune import finetune_overrides, prune_checkpoint
from imagelab.deploy.quantize import QUANTIZERS, quantize_onnx
from imagelab.deploy.report import Bench, markdown_table, write_report
from imagelab.deploy.source import DeploySource, count_parameters, network_of, open_source
from imagelab.tasks.deployment_common import bench_info, positive_int, prepare
from imagelab.tasks.deployment_data import calibration_inputs
from imagelab.tracking.console import show

log = logging.getLogger(__name__)

METHODS = (*QUANTIZERS, "prune")


def chosen_methods(value: Any) -> list[str]:
    """``method`` as a list (one name, a list of names, or ``all``); UserError on unknown names."""
    names = list(value) if isinstance(value, list | tuple | ListConfig) else [str(value)]
    names = list(METHODS) if names == ["all"] else [str(n) for n in names]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise UserError(f"method={value!r}: choose from {', '.join(METHODS)} (a list, or all)")
    return names


def quantized_variants(cfg: DictConfig, source: DeploySource, datamodule: Any, bench: Bench, out_dir: Path,
                       methods: list[str]) -> None:  # fmt: skip
    """Export fp32 ONNX (parity-checked) and measure it and each int8 variant."""
    onnx_path = export_onnx(
        source.network, bench.inputs[:1], out_dir / "model.onnx", source.kind, source.metadata
    )
    threads = torch.get_num_threads()
    row = bench.measure("onnx fp32", "onnxruntime", exported_runner(ExportedModel(onnx_path, threads=threads)),
                        onnx_path, onnx_parameters(onnx_path))  # fmt: skip
    if row["max_abs_diff_vs_reference"] > float(cfg.parity_tolerance):
        raise UserError(f"the ONNX export differs from PyTorch by {row['max_abs_diff_vs_reference']:.3g} "
                        f"> parity_tolerance={cfg.parity_tolerance}")  # fmt: skip
    for method in (m for m in methods if m in QUANTIZERS):
        calibration = None
        if QUANTIZERS[method].calibrated:
            calibration = calibration_inputs(datamodule, positive_int(cfg, "calibration_images"))
        path = quantize_onnx(
            onnx_path, out_dir / f"model.{method}.onnx", method, source.metadata, calibration
        )
        model = ExportedModel(path, threads=threads)
        bench.measure(f"onnx {method.replace('_', ' ')}", "onnxruntime", exported_runner(model), path,
                      onnx_parameters(path), quantization=model.metadata["quantization"])  # fmt: skip


def pruned_variants(cfg: DictConfig, source: DeploySource, bench: Bench, out_dir: Path) -> dict[str, Any]:
    """Prune, save the checkpoint for fine-tuning, measure it (and the fine-tuned one when given)."""
    amount = float(cfg.amount)
    pruned, checkpoint = prune_checkpoint(source, amount, bench.inputs)
    ckpt_path = out_dir / "pruned.ckpt"
    atomic_write(ckpt_path, lambda tmp: torch.save(checkpoint, tmp))
    network = network_of(pruned, source.kind)
    weights = export_safetensors(
        network, out_dir / "pruned.safetensors", dict(source.metadata, pruning=checkpoint["pruning"])
    )
    changed = "; ".join(
        f"{k} {v['before']} -> {v['after']}" for k, v in checkpoint["pruning"]["changed"].items()
    )
    bench.measure(f"pruned {amount:.0%} (before fine-tuning)", "pytorch", torch_runner(network), weights,
                  count_parameters(network), pruning=changed)  # fmt: skip
    if cfg.get("finetuned_ckpt_path"):
        tuned = open_source(str(cfg.finetuned_ckpt_path))
        if tuned.kind.name != source.kind.name:
            raise UserError(
                f"finetuned_ckpt_path holds a {tuned.kind.name}, the checkpoint a {source.kind.name}"
            )
        tuned_weights = export_safetensors(
            tuned.network, out_dir / "pruned_finetuned.safetensors", tuned.metadata
        )
        bench.measure(f"pruned {amount:.0%} + fine-tuned", "pytorch", torch_runner(tuned.network), tuned_weights,
                      count_parameters(tuned.network), checkpoint=str(tuned.path))  # fmt: skip
    overrides = finetune_overrides(source, checkpoint, ckpt_path)
    return {"pruned_checkpoint": str(ckpt_path), "pruning": changed,
            "fine-tune with": "python scripts/train.py " + " ".join(overrides)}  # fmt: skip


def compress(cfg: DictConfig) -> dict[str, Any]:
    """Quantise and/or prune ``cfg.ckpt_path`` (``cfg.method``) and write the trade-off report."""
    methods = chosen_methods(cfg.method)
    source, datamodule, bench, out_dir = prepare(cfg)
    weights = export_safetensors(source.network, out_dir / "model.safetensors", source.metadata)
    bench.measure("fp32", "pytorch", torch_runner(source.network), weights, count_parameters(source.network))
    extra: dict[str, Any] = {"methods": ", ".join(methods)}
    if any(m in QUANTIZERS for m in methods):
        quantized_variants(cfg, source, datamodule, bench, out_dir, methods)
    if "prune" in methods:
        extra |= pruned_variants(cfg, source, bench, out_dir)
    report = write_report(
        out_dir,
        f"Compression of {source.kind.name}: trade-offs",
        bench.rows,
        bench_info(source, bench, **extra),
    )
    show(markdown_table(bench.rows))
    if "fine-tune with" in extra:
        show(
            f"pruned checkpoint: {extra['pruned_checkpoint']}\nfine-tune it with:\n  {extra['fine-tune with']}"
        )
    show(f"report: {report} (and report.json)")
    return {"metrics": {"variants": len(bench.rows)}, "rows": bench.rows}
