"""What the server does differently per task kind: load the model, run it on decoded images, answer.

``scripts/serve.py`` decodes every upload to an image array itself (``imagelab.tasks.serve``); a codec turns
arrays into results and results into HTTP answers. Codecs are looked up by the task kind's name (a checkpoint's
kind, or the ``kind`` an exported file records), so an exported model serves without its LightningModule.
A user's kind serves once it registers a codec with :func:`register_codec`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from starlette.responses import JSONResponse, Response

from datamodules.image_io import write_image
from imagelab.tasks.inference import denoise_arrays, load_denoiser
from imagelab.tasks.prediction import classify_arrays, eval_transform, load_classifier


class ServingCodec:
    """The model of one task kind behind ``/predict``: ``channels`` it takes, ``predict`` and ``respond``."""

    channels: int

    def __init__(self, cfg: DictConfig, device: Any) -> None:
        self.cfg, self.device = cfg, device

    def predict(self, arrays: list[Any]) -> list[Any]:
        """One result per image array (H, W) or (H, W, C), in one call of the model."""
        raise NotImplementedError

    def respond(self, result: Any, suffix: str, media_type: str, headers: dict[str, str]) -> Response:
        """The answer to one request; ``suffix``/``media_type`` are the uploaded file's."""
        raise NotImplementedError


class DenoiserCodec(ServingCodec):
    """Image in, the denoised image back in the same format and bit depth (tiled as ``tile``/``overlap``)."""

    def __init__(self, cfg: DictConfig, device: Any) -> None:
        super().__init__(cfg, device)
        self.model = load_denoiser(cfg, device).eval()
        self.channels = int(self.model.channels)

    def predict(self, arrays: list[Any]) -> list[Any]:
        """The denoised arrays."""
        return denoise_arrays(self.model, arrays, int(self.cfg.tile), int(self.cfg.overlap), self.device)

    def respond(self, result: Any, suffix: str, media_type: str, headers: dict[str, str]) -> Response:
        """The denoised image file."""
        with tempfile.TemporaryDirectory() as tmp:
            path = write_image(Path(tmp) / f"denoised{suffix}", result)
            return Response(content=path.read_bytes(), media_type=media_type, headers=headers)


class ClassifierCodec(ServingCodec):
    """Image in, the ``top_k`` classes and their probabilities back as JSON."""

    def __init__(self, cfg: DictConfig, device: Any) -> None:
        super().__init__(cfg, device)
        self.model, self.preprocess, self.names = load_classifier(cfg, device)
        self.channels = int(self.preprocess.get("channels", 3))
        self.transform = eval_transform(self.preprocess)

    def predict(self, arrays: list[Any]) -> list[Any]:
        """(class name, probability) lists."""
        k = int(self.cfg.top_k)
        return classify_arrays(
            self.model, self.preprocess, self.names, arrays, k, self.device, self.transform
        )

    def respond(self, result: Any, suffix: str, media_type: str, headers: dict[str, str]) -> Response:
        """``{"top_k": [{"class": ..., "prob": ...}, ...]}``."""
        return JSONResponse(
            {"top_k": [{"class": name, "prob": prob} for name, prob in result]}, headers=headers
        )


CODECS: dict[str, type[ServingCodec]] = {"denoiser": DenoiserCodec, "classifier": ClassifierCodec}
"""Serving codecs by task kind name (``TaskKind.name``, the ``kind`` of an exported file's metadata)."""


def register_codec(kind: Any, codec: type[ServingCodec]) -> None:
    """Serve models of task kind ``kind`` (a ``TaskKind``) with ``codec``."""
    CODECS[str(kind.name)] = codec
