"""The denoising task kind: image in, image out (``lightning_modules.denoiser.DenoiserModule``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from imagelab.kinds.base import EvalResults, PrunePlan, Runner, TaskKind, unsupported_pruning
from imagelab.kinds.denoising_baselines import known_sigma, score_baselines
from imagelab.kinds.report import Column, rows_table
from imagelab.tracking.console import show
from lightning_modules.classical_denoisers import below_reference
from lightning_modules.denoiser import DenoiserModule
from lightning_modules.tta import ImageOutputs

DNCNN = "lightning_modules.networks.dncnn.DnCNN"
"""The denoising network whose pruned width the model config can describe (``model.net.width``)."""


class ClampedDenoiser(nn.Module):
    """A denoising network whose output is clamped to [0, 1], exactly what ``DenoiserModule.denoise`` returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Denoised (B, C, H, W) batch in [0, 1]."""
        return self.net(x).clamp(0.0, 1.0)


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


class DenoisingKind(TaskKind):
    """Denoisers: fully convolutional (any height and width), image outputs averaged as images."""

    name = "denoiser"
    scripts = "scripts/eval.py or scripts/denoise.py"
    outputs = ImageOutputs()

    def network(self, module: Any) -> nn.Module:
        """The denoising network with its output clamped to [0, 1]."""
        return ClampedDenoiser(module.net).eval()

    def metadata(self, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
        """Channels, the input and output conventions and the network config."""
        return {
            "channels": int(module.channels),
            "input": "float32 (B, C, H, W), pixels scaled to [0, 1]",
            "output": "float32 (B, C, H, W) denoised, clamped to [0, 1]",
            "network": dict(run_cfg.model.get("net", {})),
        }

    def export_axes(self) -> tuple[dict[int, str], dict[int, str]]:
        """Batch, height and width are dynamic, in and out."""
        axes = {0: "batch", 2: "height", 3: "width"}
        return axes, dict(axes)

    def test_metrics(self, run: Runner, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """PSNR (dB, per image then averaged) and SSIM on (noisy, clean) pairs, as ``test/psnr``/``test/ssim``."""
        psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        with torch.inference_mode():
            for noisy, clean in batches:
                out = run(noisy).float().clamp(0.0, 1.0)
                psnr.update(out, clean.float())
                ssim.update(out, clean.float())
        return {"psnr": float(psnr.compute()), "ssim": float(ssim.compute())}

    def eval_report(self, results: EvalResults) -> list[str]:
        """The PSNR/SSIM table: noisy input, classical baselines and every scored model; baselines logged."""
        datamodule, metrics = results.datamodule, results.metrics
        baselines = score_baselines(
            datamodule, list(results.cfg.get("baselines") or []), known_sigma(datamodule)
        )
        net_name = str(results.run_cfg.model.get("net", {}).get("_target_", "model")).rsplit(".", 1)[-1]
        table = [
            ("noisy input", {"test/psnr": metrics.get("test/psnr_noisy")}),
            *[
                (f"baseline: {n}", {"test/psnr": s["psnr"], "test/ssim": s["ssim"]})
                for n, s in baselines.items()
            ],
            *[
                (
                    (label if label != "model" else f"model: {net_name}")
                    + below_reference(s.get("test/psnr"), baselines),
                    s,
                )
                for label, s in results.rows
            ],  # a result that loses to the reference baseline (BM3D) says so
        ]
        columns = [Column("test/psnr", "PSNR (dB)", 10, 2), Column("test/ssim", "SSIM", 9, 4)]
        show(rows_table(table, columns, label_width=22, first="method", missing=None))
        for name, scores in baselines.items():
            metrics.update({f"baseline/{name}/psnr": scores["psnr"], f"baseline/{name}/ssim": scores["ssim"]})
        for logger in results.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("baseline/")})
        return ["test/psnr", "test/ssim", "test/psnr_noisy"]  # the results table at the end skips them

    def prune_plan(self, module: Any, run_cfg: DictConfig) -> PrunePlan:
        """DnCNN: every hidden conv keeps ``width`` channels; the last conv keeps its outputs."""
        target = run_cfg.model.net.get("_target_")
        if target != DNCNN:
            raise unsupported_pruning(target)
        width = int(run_cfg.model.net.width)
        return PrunePlan(
            module.net,
            [_convs(module.net)[-1]],
            lambda net: ("model.net.width", width, _convs(net)[0].out_channels),
        )


DENOISING = DenoisingKind().register(DenoiserModule)
"""The denoising kind, registered for ``DenoiserModule`` checkpoints."""
