"""The export formats (``scripts/export.py format=...``): how each writes a network and loads it back.

One registry, :data:`FORMATS`; a format is its file ending, its writer and its loader (for the parity check
and the latency rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from imagelab.config.run_checkpoint import build_module_from_checkpoint
from imagelab.core.errors import UserError
from imagelab.deploy.export import export_onnx, export_safetensors, export_torchscript
from imagelab.deploy.exported_model import ExportedModel
from imagelab.deploy.measure import Runner, exported_runner, onnx_parameters, torch_runner
from imagelab.deploy.source import DeploySource, count_parameters, network_of

Loaded = tuple[Runner, dict[str, int], str]
"""An exported file loaded back: (runner, parameter counts, runtime name)."""


@dataclass(frozen=True)
class ExportFormat:
    """One export format: the file ending, ``write(source, network, example, path, dynamo)`` and
    ``load(source, path)``."""

    suffix: str
    write: Callable[[DeploySource, nn.Module, Tensor, Path, bool], Path]
    load: Callable[[DeploySource, Path], Loaded]


def _load_safetensors(source: DeploySource, path: Path) -> Loaded:
    """A fresh network of the checkpoint's architecture with the weights read back from ``path``."""
    from safetensors.torch import load_file  # lazy: optional (deploy extra), only format=safetensors needs it

    network = network_of(build_module_from_checkpoint(source.checkpoint, source.run_cfg), source.kind)
    network.load_state_dict(load_file(str(path)), strict=True)
    network.eval()
    return torch_runner(network), count_parameters(network), "pytorch (safetensors weights)"


def _load_onnx(source: DeploySource, path: Path) -> Loaded:
    model = ExportedModel(path, threads=torch.get_num_threads())
    return exported_runner(model), onnx_parameters(path), "onnxruntime"


def _load_torchscript(source: DeploySource, path: Path) -> Loaded:
    model = ExportedModel(path, threads=torch.get_num_threads())
    return exported_runner(model), count_parameters(model.script), "torchscript"


def _write_onnx(source: DeploySource, network: nn.Module, example: Tensor, path: Path, dynamo: bool) -> Path:
    return export_onnx(network, example, path, source.kind, source.metadata, dynamo=dynamo)


def _write_torchscript(
    source: DeploySource, network: nn.Module, example: Tensor, path: Path, _: bool
) -> Path:
    return export_torchscript(network, example, path, source.metadata)


def _write_safetensors(source: DeploySource, network: nn.Module, _: Tensor, path: Path, __: bool) -> Path:
    return export_safetensors(network, path, source.metadata)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _write_onnx, _load_onnx),
    "torchscript": ExportFormat(".pt", _write_torchscript, _load_torchscript),
    "safetensors": ExportFormat(".safetensors", _write_safetensors, _load_safetensors),
}
"""Export formats by their ``format=`` name."""


def export_format(name: Any) -> ExportFormat:
    """The format called ``name``; UserError naming the choices when there is none."""
    if str(name) not in FORMATS:
        raise UserError(f"format={name!r} is not supported: use format={'|'.join(FORMATS)}")
    return FORMATS[str(name)]
