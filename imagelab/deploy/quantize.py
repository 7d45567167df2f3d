"""int8 quantisation of an exported ONNX model with onnxruntime's quantisation toolkit.

One registry, :data:`QUANTIZERS` (``scripts/compress.py method=...``):

* ``int8_dynamic``: int8 weights, activations quantised on the fly per batch (no calibration data).
* ``int8_static``: int8 weights (per channel) and activations whose ranges are calibrated on training
  images (QDQ format, as onnxruntime recommends for CPU).
Both run ``quant_pre_process`` (shape inference and graph optimisation) first. onnx and onnxruntime (the
deploy extra) are imported when a model is quantised, so the registry is cheap to read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from imagelab.core.atomic import atomic_write, atomic_write_json
from imagelab.deploy.export import set_onnx_metadata, sidecar_path


def calibration_reader(inputs: list[Tensor], input_name: str) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over a list of (1, C, H, W) tensors fed as ``input_name``."""
    from onnxruntime.quantization import CalibrationDataReader  # lazy: see the module docstring

    class TensorCalibrationReader(CalibrationDataReader):
        """The tensors, one feed each; None when they are used up."""

        def __init__(self) -> None:
            self._items = iter([{input_name: np.ascontiguousarray(x.numpy(), np.float32)} for x in inputs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            """The next calibration input, None when they are used up."""
            return next(self._items, None)

    return TensorCalibrationReader()


def _dynamic(pre: str, tmp: str, calibration: list[Tensor] | None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # lazy: see the module docstring

    quantize_dynamic(pre, tmp, weight_type=QuantType.QInt8)


def _static(pre: str, tmp: str, calibration: list[Tensor] | None) -> None:
    import onnx  # lazy: see the module docstring
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    reader = calibration_reader(calibration or [], onnx.load(pre).graph.input[0].name)
    quantize_static(
        pre, tmp, reader, quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


@dataclass(frozen=True)
class QuantMethod:
    """A quantisation method: ``run(preprocessed onnx, output, calibration)``, whether it needs calibration
    images, and ``describe(calibration)`` for the metadata and the report."""

    run: Callable[[str, str, list[Tensor] | None], None]
    calibrated: bool
    describe: Callable[[list[Tensor] | None], str]


QUANTIZERS: dict[str, QuantMethod] = {
    "int8_dynamic": QuantMethod(
        _dynamic,
        calibrated=False,
        describe=lambda _: (
            "onnxruntime quantize_dynamic: int8 weights, activations quantised per batch at run time"
        ),
    ),
    "int8_static": QuantMethod(
        _static,
        calibrated=True,
        describe=lambda calibration: (
            "onnxruntime quantize_static (QDQ): int8 per-channel weights, uint8 activations calibrated (min-max) "
            f"on {len(calibration or [])} training images"
        ),
    ),
}
"""Quantisation methods by their ``method=`` name."""
METHODS = tuple(QUANTIZERS)


def quantize_onnx(
    src: Path, dst: Path, method: str, metadata: dict[str, Any], calibration: list[Tensor] | None = None
) -> Path:
    """Quantise the fp32 ONNX model ``src`` to ``dst`` with ``method``; the metadata is copied and extended."""
    import onnx  # lazy: see the module docstring
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chosen = QUANTIZERS[method]
    meta = dict(metadata, quantization=chosen.describe(calibration))
    with tempfile.TemporaryDirectory() as tmp_dir:
        pre = str(Path(tmp_dir) / "pre.onnx")
        quant_pre_process(str(src), pre)

        def write(tmp: str) -> None:
            chosen.run(pre, tmp, calibration)
            model = onnx.load(tmp)
            set_onnx_metadata(model, meta)
            onnx.save(model, tmp)

        atomic_write(dst, write)
    atomic_write_json(sidecar_path(dst), meta)
    return dst
