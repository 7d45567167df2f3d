"""Measurements of a model variant: CPU latency (median of repeats), parameters of an ONNX file, output
difference to a reference (parity) and the task metric on the test split (PSNR/SSIM or accuracy)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

Runner = Callable[[Tensor], Tensor]
"""A model variant as a function: float (B, C, H, W) batch -> output tensor on the CPU."""


def latency_ms(run: Runner, batch: Tensor, repeats: int, warmup: int = 1) -> float:
    """Median wall time in milliseconds of ``run(batch)`` over ``repeats`` calls (after ``warmup`` calls)."""
    with torch.inference_mode():
        for _ in range(warmup):
            run(batch)
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            run(batch)
            times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def max_abs_diff(reference: Runner, candidate: Runner, inputs: Tensor) -> float:
    """Largest absolute difference between the outputs of two variants on the same inputs."""
    with torch.inference_mode():
        return float((reference(inputs).float() - candidate(inputs).float()).abs().max())


def onnx_parameters(path: str | Path) -> dict[str, int]:
    """Elements of an ONNX file's initializers (its stored weights, incl. quantisation scales), and non-zeros."""
    import onnx  # lazy: optional (deploy extra); PyTorch variants are measured without it
    from onnx import numpy_helper

    total = nonzero = 0
    for init in onnx.load(str(path)).graph.initializer:
        array = numpy_helper.to_array(init)
        total += int(array.size)
        nonzero += int(np.count_nonzero(array))
    return {"params": total, "nonzero_params": nonzero}


def test_metrics(kind: str, run: Runner, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Denoisers: PSNR (dB, per image then averaged) and SSIM on (noisy, clean) pairs, as the training
    module's ``test/psnr``/``test/ssim``; classifiers: top-1 accuracy on (images, labels)."""
    with torch.inference_mode():
        if kind == "denoiser":
            psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
            ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
            for noisy, clean in batches:
                out = run(noisy).float().clamp(0.0, 1.0)
                psnr.update(out, clean.float())
                ssim.update(out, clean.float())
            return {"psnr": float(psnr.compute()), "ssim": float(ssim.compute())}
        acc: Any = None
        for images, labels in batches:
            logits = run(images).float()
            acc = acc or MulticlassAccuracy(logits.shape[-1], average="micro")
            acc.update(logits, labels)
        return {"accuracy": float(acc.compute())}


def torch_runner(network: torch.nn.Module) -> Runner:
    """A PyTorch network in eval mode as a ``Runner``."""
    network.eval()
    return lambda x: network(x)


def exported_runner(model: Any) -> Runner:
    """An ``ExportedModel`` (ONNX or TorchScript file) as a ``Runner``."""
    return lambda x: torch.from_numpy(model.run(x))
