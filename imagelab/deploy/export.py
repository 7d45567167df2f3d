"""Write a deployable network to ONNX, TorchScript or safetensors, with its metadata inside and beside it."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.export import Dim

from imagelab.core.atomic import atomic_write, atomic_write_json
from imagelab.deploy.source import METADATA_KEY

if TYPE_CHECKING:  # the models behind the kinds stay unimported where exported files are read
    from imagelab.kinds import TaskKind

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def sidecar_path(path: str | Path) -> Path:
    """The JSON file written beside an exported model: ``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{path}.json")


def dynamic_axes(kind: TaskKind) -> dict[str, dict[int, str]]:
    """Dynamic ONNX axes of the input and output, as the task kind says (the batch; H/W for denoisers)."""
    inputs, outputs = kind.export_axes()
    return {"input": inputs, "output": outputs}


def export_onnx(
    network: nn.Module,
    example: Tensor,
    path: Path,
    kind: TaskKind,
    metadata: dict[str, Any],
    dynamo: bool = False,
) -> Path:
    """Export ``network`` to ONNX (opset 17) with the kind's dynamic axes (batch, H/W for denoisers), metadata inside.

    ``dynamo=False`` uses PyTorch's TorchScript-based exporter (about 0.5 s for these nets, deprecated but
    still shipped in torch 2.x); ``dynamo=True`` uses the newer ``torch.export``-based one (several seconds).
    """
    import onnx  # lazy: optional (deploy extra); torchscript and safetensors export work without it

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                dims = {axis: Dim(name) for axis, name in kind.export_axes()[0].items()}
                torch.onnx.export(
                    network, (example,), tmp, input_names=["input"], output_names=["output"], dynamo=True,
                    dynamic_shapes=({**dims},), external_data=False, opset_version=max(ONNX_OPSET, 18),
                )  # fmt: skip
            else:
                torch.onnx.export(
                    network, (example,), tmp, input_names=["input"], output_names=["output"], dynamo=False,
                    dynamic_axes=dynamic_axes(kind), opset_version=ONNX_OPSET,
                )  # fmt: skip
        model = onnx.load(tmp)
        set_onnx_metadata(model, metadata)
        onnx.save(model, tmp)

    network.eval()
    with torch.no_grad():
        atomic_write(path, write)
    atomic_write_json(sidecar_path(path), metadata)
    return path


def set_onnx_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` as JSON under ``imagelab`` in an ONNX model's metadata_props (replacing it)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def export_torchscript(network: nn.Module, example: Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """Trace ``network`` to TorchScript; the metadata goes in the archive's extra files and beside it."""
    network.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export but still shipped
        traced = torch.jit.trace(network, example)
        extra = {f"{METADATA_KEY}.json": json.dumps(metadata)}
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
    atomic_write_json(sidecar_path(path), metadata)
    return path


def export_safetensors(network: nn.Module, path: Path, metadata: dict[str, Any]) -> Path:
    """The network's weights (LoRA merged) as safetensors, the metadata in its header and beside it."""
    from safetensors.torch import save_file  # lazy: optional (deploy extra), only this format needs it

    state = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={METADATA_KEY: json.dumps(metadata)}))
    atomic_write_json(sidecar_path(path), metadata)
    return path
