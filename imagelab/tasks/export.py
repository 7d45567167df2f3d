"""The export task: checkpoint -> ONNX / TorchScript / safetensors file, parity check, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from imagelab.core.errors import UserError
from imagelab.deploy.export import sidecar_path
from imagelab.deploy.formats import export_format
from imagelab.deploy.measure import torch_runner
from imagelab.deploy.report import write_report
from imagelab.deploy.source import count_parameters
from imagelab.tasks.deployment_common import bench_info, prepare
from imagelab.tracking.console import show

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.format``; fail (UserError) when the parity check exceeds its tolerance."""
    fmt = str(cfg.format)
    chosen = export_format(fmt)
    tolerance = float(cfg.parity_tolerance)
    source, _, bench, out_dir = prepare(cfg)
    path = Path(str(cfg.output)).expanduser() if cfg.get("output") else out_dir / f"model{chosen.suffix}"
    if path.suffix != chosen.suffix:
        raise UserError(f"output={path} must end in {chosen.suffix} for format={fmt}")
    chosen.write(source, source.network, bench.inputs[:1], path, bool(cfg.onnx_dynamo))
    bench.measure("fp32 checkpoint", "pytorch", torch_runner(source.network), source.path,
                  count_parameters(source.network))  # fmt: skip
    run, params, runtime = chosen.load(source, path)
    row = bench.measure(f"exported {fmt}", runtime, run, path, params)
    diff, n = row["max_abs_diff_vs_reference"], len(bench.inputs)
    ok = diff <= tolerance
    info = bench_info(source, bench, parity=f"max abs diff {diff:.3g} on {n} test images, tolerance {tolerance:g}: "
                      + ("passed" if ok else "FAILED"))  # fmt: skip
    report = write_report(out_dir, f"Export of {source.kind.name} to {fmt}", bench.rows, info)
    first = bench.rows[0]
    show(f"parity: max |{fmt} - pytorch| = {diff:.3g} on {n} real test images (tolerance {tolerance:g})")
    show(
        f"latency (batch 1, median): pytorch {first['latency_ms_b1']:.3f} ms, {fmt} {row['latency_ms_b1']:.3f} ms"
    )
    if not ok:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        raise UserError(f"parity check failed: the {fmt} model differs from PyTorch by {diff:.3g} > {tolerance:g} "
                        f"(file removed; see {report})")  # fmt: skip
    show(f"exported {path} (metadata inside and in {sidecar_path(path).name}); report: {report}")
    return {"metrics": {"max_abs_diff": diff, **{k: v for k, v in row.items() if k.startswith(("latency", "test_"))}},
            "output": str(path)}  # fmt: skip
