"""Run an exported model (ONNX through onnxruntime, TorchScript through ``torch.jit.load``) without Lightning.

``ExportedModel`` reads the metadata written by ``imagelab.deploy.export`` and offers the two calls the project's
inference code uses: ``denoise`` (denoisers) and ``predict_proba`` (classifiers), plus ``channels``,
``preprocess`` and ``class_names``; so ``scripts/denoise.py``/``scripts/predict.py`` (``model_path=...``) and
the HTTP server run an exported file exactly like a checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from imagelab.core.errors import UserError, first_line
from imagelab.deploy.source import METADATA_KEY

LOADABLE = (".onnx", ".pt")
"""File endings ``ExportedModel`` runs (safetensors holds weights only: load it into the network instead)."""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported model: from inside the file, else from its sidecar ``<file>.json``."""
    file = Path(path)
    meta: str | None = None
    if file.suffix == ".onnx":
        import onnx  # lazy: optional (deploy extra); a TorchScript file runs without it

        model = onnx.load(str(file), load_external_data=False)
        meta = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    elif file.suffix == ".pt":
        extra = {f"{METADATA_KEY}.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
        meta = extra[f"{METADATA_KEY}.json"] or None
    sidecar = Path(f"{file}.json")
    if meta is None and sidecar.is_file():
        meta = sidecar.read_text()
    if meta is None:
        raise UserError(f"{file} carries no imagelab metadata: export it with scripts/export.py")
    return json.loads(meta)


class ExportedModel:
    """An ONNX or TorchScript model file with its metadata, runnable on CPU (or a GPU for TorchScript)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise UserError(
                f"model_path={self.path} does not exist: give a file written by scripts/export.py"
            )
        if self.path.suffix not in LOADABLE:
            raise UserError(
                f"model_path={self.path}: only exported .onnx and .pt (TorchScript) files run alone; "
                "use ckpt_path= for checkpoints"
            )
        try:
            self.metadata = read_metadata(self.path)
            self._load(device, threads)
        except UserError:
            raise
        except Exception as exc:  # onnx/onnxruntime/torch raise many types for foreign or corrupt files
            raise UserError(f"cannot load exported model {self.path}: {first_line(exc, 160)}") from None
        self.kind: str = self.metadata["kind"]
        self.channels: int = int(self.metadata["channels"])
        self.preprocess: dict[str, Any] | None = self.metadata.get("preprocess")
        self.class_names: list[str] | None = self.metadata.get("class_names")

    def _load(self, device: str, threads: int | None) -> None:
        self.device = torch.device("cpu")
        if self.path.suffix == ".onnx":
            import onnxruntime as ort  # lazy: optional (deploy extra); a TorchScript file runs without it

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            options.log_severity_level = 3  # errors only
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.script = None
        else:
            self.device = torch.device(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
                self.script = torch.jit.load(str(self.path), map_location=self.device).eval()
            self.session = None

    def expect(self, kind: str) -> ExportedModel:
        """Check that the file holds a ``kind`` model (UserError if not); returns self."""
        if self.kind != kind:
            raise UserError(f"{self.path} holds a {self.kind} model, not a {kind}")
        return self

    def run(self, batch: np.ndarray | Tensor) -> np.ndarray:
        """Raw output of the model on a float32 (B, C, H, W) batch (denoised images or logits)."""
        if isinstance(batch, Tensor):
            batch = batch.detach().cpu().numpy()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is not None:
            return self.session.run(None, {self.input_name: batch})[0]
        with torch.inference_mode():
            return self.script(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    __call__ = run

    def denoise(self, x: Tensor) -> Tensor:
        """Denoised (B, C, H, W) batch in [0, 1] (as ``DenoiserModule.denoise``), on the input's device."""
        return torch.from_numpy(self.run(x)).clamp(0.0, 1.0).to(x.device)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities (B, num_classes) of a normalised batch (as ``ClassifierModule.predict_proba``)."""
        return torch.from_numpy(self.run(x)).float().softmax(dim=-1).to(x.device)

    def to(self, device: Any) -> ExportedModel:
        """No-op for API compatibility with LightningModules (the device is chosen when loading)."""
        return self

    def eval(self) -> ExportedModel:
        """No-op for API compatibility with LightningModules."""
        return self
