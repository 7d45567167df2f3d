"""HTTP serving with LitServe (Lightning's serving library): ``POST /predict`` an image file, get the denoised
image (same format and bit depth) or a classifier's top-k as JSON; ``GET /health``; request batching.

The image comes as a multipart upload (``curl -F file=@x.png``) or as the raw request body (``curl
--data-binary @x.png -H 'Content-Type: image/png'``, ``curl -T x.png`` (a PUT), ``requests.post(url,
data=...)``). Bad input never reaches the model and never gives a 500: ``UploadGuard`` (an ASGI middleware in
front of the endpoint) answers 413 to a body over the size limit and 400 to an empty or malformed one; the
worker answers 415 to a file that is not an image, 400 to a corrupt one, 413 to one with
too many pixels and 422 to a wrong channel count. Such answers are made per request, so a bad request that
lands in the same batch as good ones does not fail them (LitServe fails a whole batch when one of its
requests raises). Each answer says in its ``X-Batch-Size`` header how many requests ran in its batch.
SIGTERM or SIGINT to the main process stops the server: no new connections, requests in flight finish (up to
``shutdown_timeout`` seconds), the workers stop, and the process exits 143 / 130 with one line.
"""

# no ``from __future__ import annotations``: LitServe reads decode_request's annotation as a class
import base64
import json
import logging
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from omegaconf import DictConfig, OmegaConf
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from datamodules.image_io import read_image
from imagelab.config.run_checkpoint import load_run_checkpoint
from imagelab.core.errors import RunInterrupted, UserError
from imagelab.deploy.exported_model import ExportedModel
from imagelab.tasks.inference import check_model_choice
from imagelab.tasks.serve_codecs import CODECS
from imagelab.tracking.console import show

log = logging.getLogger(__name__)

SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": (".png", "image/png"),
    b"\xff\xd8\xff": (".jpg", "image/jpeg"),
    b"II*\x00": (".tif", "image/tiff"),
    b"MM\x00*": (".tif", "image/tiff"),
    b"BM": (".bmp", "image/bmp"),
}
"""First bytes of the accepted image formats -> (file ending, media type)."""
FIELD = "file"
"""Name of the multipart form field that carries the image."""


@dataclass
class Rejected:
    """A request refused with an HTTP status and a one-line reason."""

    status: int
    detail: str


@dataclass
class Upload:
    """A decoded image and how to send the answer back (same file type)."""

    array: Any
    suffix: str
    media_type: str


def error_response(status: int, detail: str) -> JSONResponse:
    """The JSON body of every refused request: ``{"error": "..."}``."""
    return JSONResponse({"error": detail}, status_code=status)


def sniff(data: bytes) -> tuple[str, str] | None:
    """(file ending, media type) of image bytes by their signature, or None when they are no known image."""
    return next((v for sig, v in SIGNATURES.items() if data.startswith(sig)), None)


class UploadGuard:
    """ASGI middleware for ``POST``/``PUT <path>``: 413 over ``max_bytes``, 400 when empty or malformed.

    It reads the body (counting, so a missing or false Content-Length cannot bypass the limit). A multipart
    body must parse as form data with a file field; any other body is the image itself (``image/*``, or
    no type, as ``curl -T`` and ``requests.post(data=...)`` send it: the worker checks the image signature and
    answers 415 to anything else). The image goes on to the endpoint as a JSON body ``{"filename", "data":
    base64}`` (LitServe's queue to the worker process cannot carry an UploadFile), always as a POST.
    """

    def __init__(self, app: Any, path: str = "/predict", max_bytes: int = 20_000_000) -> None:
        self.app, self.path, self.max_bytes = app, path, int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check one request (only POST or PUT to the endpoint) and pass it on or answer it."""
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT") or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type", "")
        body, more, too_big = bytearray(), True, False
        while more:  # read everything (also when refusing) so the client always gets the answer
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            too_big = too_big or len(body) + len(chunk) > self.max_bytes
            if not too_big:
                body += chunk
            more = message.get("more_body", False)
        multipart = content_type.startswith("multipart/form-data")
        if too_big:
            reply = error_response(
                413, f"upload larger than the limit of {self.max_bytes / 1e6:g} MB (max_upload_mb)"
            )
        elif not body:
            reply = error_response(400, f"empty request body: send an image file (curl -F {FIELD}=@image.png "
                                   "URL, or curl --data-binary @image.png -H 'Content-Type: image/png' URL)")  # fmt: skip
        else:
            reply = None
        if reply is None and multipart:
            reply, payload = await self._form_to_json(scope, bytes(body))
        elif reply is None:  # the body is the image itself
            payload = json.dumps({"filename": None, "data": base64.b64encode(body).decode("ascii")}).encode()
        if reply is not None:
            await reply(scope, receive, send)
            return
        # the endpoint gets the file as JSON: LitServe's worker queue cannot carry starlette's UploadFile
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        await self.app({**scope, "method": "POST", "headers": headers}, replay, send)

    @staticmethod
    async def _form_to_json(scope: dict, body: bytes) -> tuple[Response | None, bytes]:
        """(refusal or None, ``{"filename": ..., "data": <base64>}`` as JSON bytes) of a multipart body."""

        async def once() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(scope, once).form()
        except Exception as exc:  # starlette raises MultiPartException and others for broken bodies
            return error_response(400, f"malformed multipart body: {exc}"), b""
        upload = form.get(FIELD)
        if not hasattr(upload, "read"):
            await form.close()
            return error_response(
                400, f"no file in the form field '{FIELD}' (curl -F {FIELD}=@image.png URL)"
            ), b""
        data = await upload.read()
        await form.close()
        payload = {"filename": upload.filename, "data": base64.b64encode(data).decode("ascii")}
        return None, json.dumps(payload).encode()


class ImageAPI(ls.LitAPI):
    """The model behind ``/predict`` from a checkpoint or an exported file, through its kind's serving codec
    (``imagelab.tasks.serve_codecs``: a denoiser answers images, a classifier its top-k)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(max_batch_size=int(cfg["max_batch_size"]), batch_timeout=float(cfg["batch_timeout"]))
        self.cfg = cfg

    def setup(self, device: str) -> None:
        """Load the model once in the worker process."""
        self.device = torch.device(device)
        self.codec = CODECS[self.cfg["kind"]](OmegaConf.create(self.cfg), self.device)
        self.channels = self.codec.channels

    def decode_request(self, request: Request) -> Upload | Rejected:  # a dict, see UploadGuard
        """The uploaded image, or the reason it is refused (never raises: see the module docstring)."""
        try:
            data = base64.b64decode(request["data"], validate=True)  # see UploadGuard
        except (KeyError, TypeError, ValueError):
            return Rejected(400, f"no file in the form field '{FIELD}'")
        kind = sniff(data[:16])
        if kind is None:
            return Rejected(415, "the upload is not an image: send a PNG, JPEG, TIFF or BMP file")
        suffix, media_type = kind
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                array = read_image(path)
            except UserError as exc:
                return Rejected(400, str(exc).replace(str(path), "the upload").split("; replace")[0])
        height, width = array.shape[:2]
        if height * width > int(self.cfg["max_pixels"]):
            return Rejected(
                413,
                f"image of {width}x{height} pixels is over the limit of {self.cfg['max_pixels']} (max_pixels)",
            )
        channels = 1 if array.ndim == 2 else array.shape[2]
        if channels != self.channels and self.cfg["strict_channels"]:
            want = "grayscale (1 channel)" if self.channels == 1 else f"colour ({self.channels} channels)"
            return Rejected(422, f"the model takes {want} images, this one has {channels} channel(s)")
        return Upload(array, suffix, media_type)

    def predict(self, x: Any) -> Any:
        """Run the model on the valid uploads of a batch (one call for all of them); refusals pass through."""
        items = x if isinstance(x, list) else [x]
        valid = [i for i, item in enumerate(items) if isinstance(item, Upload)]
        arrays = [items[i].array for i in valid]
        results = self.codec.predict(arrays) if arrays else []
        out = list(items)
        for i, result in zip(valid, results, strict=True):
            out[i] = (result, items[i], len(items))
        return out if isinstance(x, list) else out[0]

    def encode_response(self, output: Any) -> Response:
        """The denoised image file, the top-k JSON, or the refusal as JSON with its status."""
        if isinstance(output, Rejected):
            return error_response(output.status, output.detail)
        result, upload, batch_size = output
        headers = {"X-Batch-Size": str(batch_size)}
        return self.codec.respond(result, upload.suffix, upload.media_type, headers)


def server_config(cfg: DictConfig) -> dict[str, Any]:
    """The plain settings the worker needs, checked; the model kind is read here (fails fast)."""
    check_model_choice(cfg)
    for key in ("port", "max_batch_size", "max_pixels", "top_k", "tile"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key} must be an integer >= 1, got {value!r}")
    if float(cfg.max_upload_mb) <= 0 or float(cfg.batch_timeout) < 0:
        raise UserError("max_upload_mb must be > 0 and batch_timeout >= 0")
    if cfg.get("model_path"):
        kind = ExportedModel(str(cfg.model_path)).kind
    else:
        from imagelab.kinds import kind_of  # lazy: imports the models (Lightning); exported files need none

        kind = kind_of(load_run_checkpoint(str(cfg.ckpt_path))[1]).name
    if kind not in CODECS:
        raise UserError(f"{cfg.ckpt_path} holds a {kind} model: only denoisers and classifiers can be served")
    plain = OmegaConf.to_container(cfg, resolve=True)
    keys = ("ckpt_path", "model_path", "max_batch_size", "batch_timeout", "max_pixels", "strict_channels", "top_k",
            "tile", "overlap", "device")  # fmt: skip
    return {**{k: plain.get(k) for k in keys}, "kind": kind, "merge_lora": True}


class StopOnSignal:
    """SIGTERM/SIGINT of the main process -> LitServe's own graceful shutdown, in a bounded time.

    LitServe's main process waits on a ``multiprocessing.Manager`` event; an exception raised inside that wait
    (a signal handler's) leaves the manager connection mid-call and the shutdown that follows hangs. So the
    handler only records the signal and wakes a helper thread, which sets the shutdown event through a
    connection of its own; the wait then returns normally and LitServe stops its HTTP server (in-flight
    requests finish, up to ``shutdown_timeout`` seconds) and its workers.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.signum: int | None = None
        self._wake = threading.Event()
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Route SIGTERM and SIGINT of this (main) process here; start the helper thread."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handler)
        threading.Thread(target=self._stop_when_woken, name="serve-stop", daemon=True).start()

    def restore(self) -> None:
        """Put the handlers back that were there before :meth:`install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked LitServe process inherited this handler: default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.signum is None:
            self.signum = signum
            self._wake.set()

    def _stop_when_woken(self) -> None:
        self._wake.wait()
        logging.getLogger("litserve").setLevel(logging.WARNING)  # the caller prints the one line
        while getattr(self.server, "_shutdown_event", None) is None:  # created early in LitServer.run
            threading.Event().wait(0.05)
        self.server._shutdown_event.set()


def serve(cfg: DictConfig) -> dict[str, Any]:
    """Start the server on ``cfg.host:cfg.port`` and block until SIGTERM or SIGINT stops it (exit 143 / 130)."""
    settings = server_config(cfg)
    accelerator = (
        "cpu" if str(cfg.device) == "cpu" or str(cfg.get("model_path") or "").endswith(".onnx") else "auto"
    )
    settings["device"] = "cpu" if accelerator == "cpu" else str(cfg.device)
    guard = (UploadGuard, {"path": "/predict", "max_bytes": int(float(cfg.max_upload_mb) * 1e6)})
    server = ls.LitServer(ImageAPI(settings), accelerator=accelerator, devices=1, workers_per_device=1,
                          timeout=float(cfg.timeout), middlewares=[guard])  # fmt: skip
    server.uvicorn_graceful_timeout = float(cfg.shutdown_timeout)  # in-flight requests may finish this long
    stopper = StopOnSignal(server)
    stopper.install()
    show(f"serving a {settings['kind']} on http://{cfg.host}:{cfg.port}/predict (health: /health)")
    show(json.dumps({k: settings[k] for k in ("max_batch_size", "max_pixels", "strict_channels")}))
    try:
        server.run(host=str(cfg.host), port=int(cfg.port), generate_client_file=False, num_api_servers=1)
    finally:
        stopper.restore()
    if stopper.signum is not None:
        raise RunInterrupted(stopper.signum, "(the server stopped)")
    return {"metrics": {}}
