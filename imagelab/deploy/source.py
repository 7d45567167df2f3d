"""A trained checkpoint as a deployable network: the plain ``nn.Module`` to export, its metadata, its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint, model_kind
from imagelab.core.errors import UserError

METADATA_KEY = "imagelab"
"""Key of the JSON metadata in an ONNX file's metadata_props, a TorchScript file's extra files and a
safetensors header (and the stem of the sidecar ``<file>.json``)."""
FORMAT_VERSION = 1


class ClampedDenoiser(nn.Module):
    """A denoising network whose output is clamped to [0, 1], exactly what ``DenoiserModule.denoise`` returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Denoised (B, C, H, W) batch in [0, 1]."""
        return self.net(x).clamp(0.0, 1.0)


@dataclass
class DeploySource:
    """A checkpoint opened for deployment.

    ``network`` maps a float (B, C, H, W) batch to the denoised batch (denoiser, clamped to [0, 1]) or to the
    logits (classifier, LoRA adapters merged). ``metadata`` is what travels with every exported file.
    """

    path: Path
    kind: str
    module: Any
    network: nn.Module
    run_cfg: DictConfig
    checkpoint: dict[str, Any] = field(repr=False)
    metadata: dict[str, Any]


def network_of(module: Any, kind: str) -> nn.Module:
    """The plain network of a Denoiser/ClassifierModule in eval mode (what export, pruning and serving use)."""
    if kind == "denoiser":
        return ClampedDenoiser(module.net).eval()
    return module.inference_network().eval()


def build_metadata(kind: str, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
    """What an exported model needs to be used alone: kind, channels, preprocessing and class names."""
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": kind, "source_checkpoint": source}
    if kind == "denoiser":
        meta.update(
            channels=int(module.channels),
            input="float32 (B, C, H, W), pixels scaled to [0, 1]",
            output="float32 (B, C, H, W) denoised, clamped to [0, 1]",
            network=dict(run_cfg.model.get("net", {})),
        )
    else:
        preprocess = module.preprocess or {}
        if not preprocess or not module.class_names:
            raise UserError(
                f"{source} does not record its preprocessing or classes: retrain with scripts/train.py"
            )
        meta.update(
            channels=int(preprocess.get("channels", 3)),
            input="float32 (B, C, H, W), resized and normalised as in `preprocess`",
            output="float32 (B, num_classes) logits",
            preprocess=dict(preprocess),
            class_names=list(module.class_names),
            network=str(run_cfg.model.get("backbone", "")),
        )
    return meta


def open_source(ckpt_path: str | Path) -> DeploySource:
    """Open a denoiser or classifier checkpoint written by scripts/train.py (or by scripts/compress.py)."""
    checkpoint, run_cfg = load_run_checkpoint(ckpt_path)
    kind = model_kind(run_cfg)
    if kind not in ("denoiser", "classifier"):
        raise UserError(f"{ckpt_path} holds a {kind} model: only denoisers and classifiers can be deployed")
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
