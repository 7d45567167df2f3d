"""A trained checkpoint as a deployable network: the plain ``nn.Module`` to export, its metadata, its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch import nn

from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
from imagelab.core.errors import UserError

if TYPE_CHECKING:  # the models behind the kinds stay unimported where exported files are read
    from imagelab.kinds import TaskKind

METADATA_KEY = "imagelab"
"""Key of the JSON metadata in an ONNX file's metadata_props, a TorchScript file's extra files and a
safetensors header (and the stem of the sidecar ``<file>.json``)."""
FORMAT_VERSION = 1


@dataclass
class DeploySource:
    """A checkpoint opened for deployment.

    ``network`` maps a float (B, C, H, W) batch to what the task kind says (``TaskKind.network``): the denoised
    batch (denoiser, clamped to [0, 1]), the logits (classifier, LoRA adapters merged), ... ``metadata`` is what travels with every exported file.
    """

    path: Path
    kind: TaskKind
    module: Any
    network: nn.Module
    run_cfg: DictConfig
    checkpoint: dict[str, Any] = field(repr=False)
    metadata: dict[str, Any]


def network_of(module: Any, kind: TaskKind) -> nn.Module:
    """The plain network of a LightningModule in eval mode (what export, pruning and serving use)."""
    return kind.network(module)


def build_metadata(kind: TaskKind, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
    """What an exported model needs to be used alone: kind, and what the kind adds (channels, classes, ...)."""
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": kind.name, "source_checkpoint": source}
    meta.update(kind.metadata(module, run_cfg, source))
    return meta


def open_source(ckpt_path: str | Path) -> DeploySource:
    """Open a checkpoint written by scripts/train.py (or by scripts/compress.py) of any registered task kind."""
    from imagelab.kinds import kind_of  # lazy: imports the models; exported files are read without them

    checkpoint, run_cfg = load_run_checkpoint(ckpt_path)
    kind = kind_of(run_cfg)
    if kind.outputs is None:
        raise UserError(
            f"{ckpt_path} holds a {kind.name} model: only models of a registered task kind can be deployed"
        )
    module = build_module_from_checkpoint(checkpoint, run_cfg)
    network = network_of(module, kind)
    metadata = build_metadata(kind, module, run_cfg, str(ckpt_path))
    return DeploySource(Path(ckpt_path), kind, module, network, run_cfg, checkpoint, metadata)


def count_parameters(network: nn.Module) -> dict[str, int]:
    """Parameters of a PyTorch network: all of them and the non-zero ones (sparsity shows as a gap)."""
    params = list(network.parameters())
    return {
        "params": int(sum(p.numel() for p in params)),
        "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in params)),
    }
