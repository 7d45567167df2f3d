"""The export task: checkpoint -> ONNX / TorchScript / safetensors file, parity check, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from imagelab.config.run_checkpoint import build_module_from_checkpoint
from imagelab.core.errors import UserError
from imagelab.deploy.export import FORMATS, export_file, sidecar_path
from imagelab.deploy.exported_model import ExportedModel
from imagelab.deploy.measure import exported_runner, onnx_parameters, torch_runner
from imagelab.deploy.report import write_report
from imagelab.deploy.source import DeploySource, count_parameters, network_of
from imagelab.tasks.deployment_common import bench_info, prepare

log = logging.getLogger(__name__)


def reload_safetensors(source: DeploySource, path: Path) -> Any:
    """A fresh network of the checkpoint's architecture with the weights read back from ``path``."""
    from safetensors.torch import load_file  # lazy: optional (deploy extra), only format=safetensors needs it

    network = network_of(build_module_from_checkpoint(source.checkpoint, source.run_cfg), source.kind)
    network.load_state_dict(load_file(str(path)), strict=True)
    return network.eval()


def exported_variant(fmt: str, path: Path, source: DeploySource) -> tuple[Any, dict[str, int], str]:
    """(runner, parameter counts, runtime name) of an exported file, loaded back from disk."""
    if fmt == "safetensors":
        network = reload_safetensors(source, path)
        return torch_runner(network), count_parameters(network), "pytorch (safetensors weights)"
    model = ExportedModel(path, threads=torch.get_num_threads())
    if fmt == "onnx":
        return exported_runner(model), onnx_parameters(path), "onnxruntime"
    return exported_runner(model), count_parameters(model.script), "torchscript"


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.format``; fail (UserError) when the parity check exceeds its tolerance."""
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r} is not supported: use format={'|'.join(FORMATS)}")
    tolerance = float(cfg.parity_tolerance)
    source, _, bench, out_dir = prepare(cfg)
    path = Path(str(cfg.output)).expanduser() if cfg.get("output") else out_dir / f"model{FORMATS[fmt]}"
    if path.suffix != FORMATS[fmt]:
        raise UserError(f"output={path} must end in {FORMATS[fmt]} for format={fmt}")
    export_file(
        fmt, source.network, bench.inputs[:1], path, source.kind, source.metadata, bool(cfg.onnx_dynamo)
    )
    bench.measure("fp32 checkpoint", "pytorch", torch_runner(source.network), source.path,
                  count_parameters(source.network))  # fmt: skip
    run, params, runtime = exported_variant(fmt, path, source)
    row = bench.measure(f"exported {fmt}", runtime, run, path, params)
    diff, n = row["max_abs_diff_vs_reference"], len(bench.inputs)
    ok = diff <= tolerance
    info = bench_info(source, bench, parity=f"max abs diff {diff:.3g} on {n} test images, tolerance {tolerance:g}: "
                      + ("passed" if ok else "FAILED"))  # fmt: skip
    report = write_report(out_dir, f"Export of {source.kind} to {fmt}", bench.rows, info)
    first = bench.rows[0]
    print(f"parity: max |{fmt} - pytorch| = {diff:.3g} on {n} real test images (tolerance {tolerance:g})")
    print(
        f"latency (batch 1, median): pytorch {first['latency_ms_b1']:.3f} ms, {fmt} {row['latency_ms_b1']:.3f} ms"
    )
    if not ok:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        raise UserError(f"parity check failed: the {fmt} model differs from PyTorch by {diff:.3g} > {tolerance:g} "
                        f"(file removed; see {report})")  # fmt: skip
    print(f"exported {path} (metadata inside and in {sidecar_path(path).name}); report: {report}")
    return {"metrics": {"max_abs_diff": diff, **{k: v for k, v in row.items() if k.startswith(("latency", "test_"))}},
            "output": str(path)}  # fmt: skip
