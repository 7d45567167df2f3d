"""Measurements of a model variant: CPU latency (median of repeats), parameters of an ONNX file, output
difference to a reference (parity). The task metric on the test split is the task kind's
(``TaskKind.test_metrics``: PSNR/SSIM, accuracy, ...)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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


def torch_runner(network: torch.nn.Module) -> Runner:
    """A PyTorch network in eval mode as a ``Runner``."""
    network.eval()
    return lambda x: network(x)


def exported_runner(model: Any) -> Runner:
    """An ``ExportedModel`` (ONNX or TorchScript file) as a ``Runner``."""
    return lambda x: torch.from_numpy(model.run(x))
