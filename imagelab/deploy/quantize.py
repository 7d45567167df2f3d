"""int8 quantisation of an exported ONNX model with onnxruntime's quantisation toolkit.

* ``int8_dynamic``: int8 weights, activations quantised on the fly per batch (no calibration data).
* ``int8_static``: int8 weights (per channel) and activations whose ranges are calibrated on training
  images (QDQ format, as onnxruntime recommends for CPU).
Both run ``quant_pre_process`` (shape inference and graph optimisation) first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import Tensor

from imagelab.core.atomic import atomic_write, atomic_write_json
from imagelab.deploy.export import set_onnx_metadata, sidecar_path

METHODS = ("int8_dynamic", "int8_static")


class TensorCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over a list of (1, C, H, W) tensors fed as ``input_name``."""

    def __init__(self, inputs: list[Tensor], input_name: str) -> None:
        self._items = iter([{input_name: np.ascontiguousarray(x.numpy(), np.float32)} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration input, None when they are used up."""
        return next(self._items, None)


def quantize_onnx(
    src: Path, dst: Path, method: str, metadata: dict[str, Any], calibration: list[Tensor] | None = None
) -> Path:
    """Quantise the fp32 ONNX model ``src`` to ``dst`` with ``method``; the metadata is copied and extended."""
    meta = dict(metadata, quantization=_describe(method, calibration))
    with tempfile.TemporaryDirectory() as tmp_dir:
        pre = str(Path(tmp_dir) / "pre.onnx")
        quant_pre_process(str(src), pre)

        def write(tmp: str) -> None:
            if method == "int8_dynamic":
                quantize_dynamic(pre, tmp, weight_type=QuantType.QInt8)
            else:
                name = onnx.load(pre).graph.input[0].name
                reader = TensorCalibrationReader(calibration or [], name)
                quantize_static(
                    pre, tmp, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                )  # fmt: skip
            model = onnx.load(tmp)
            set_onnx_metadata(model, meta)
            onnx.save(model, tmp)

        atomic_write(dst, write)
    atomic_write_json(sidecar_path(dst), meta)
    return dst


def _describe(method: str, calibration: list[Tensor] | None) -> str:
    if method == "int8_dynamic":
        return "onnxruntime quantize_dynamic: int8 weights, activations quantised per batch at run time"
    return (
        f"onnxruntime quantize_static (QDQ): int8 per-channel weights, uint8 activations calibrated (min-max) "
        f"on {len(calibration or [])} training images"
    )
