"""From checkpoint to deployment on tiny real models: export with parity (ONNX, TorchScript, safetensors, LoRA
merged), denoise.py/predict.py on the exported file without Lightning, int8 and pruning with the trade-off report,
fine-tuning the pruned checkpoint with train.py, and the HTTP server (LitServe) against denoise.py/predict.py."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from imagelab.core.errors import UserError
from tests.helpers.compose import compose
from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import fast_denoise
from tests.helpers.paths import REPO_ROOT, SCRIPTS
from tests.helpers.serving import wait_until_healthy

DENOISER = fast_denoise("none")  # the config of the tiny_denoise_run fixture
BENCH = ["bench.repeats=2", "bench.batch=4"]


def _trained(result: dict) -> dict:
    """A training result as these tests read it: the best checkpoint and the metrics."""
    return {"ckpt": result["best_checkpoint"], "metrics": result["metrics"]}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_denoise_run: dict, tiny_classifier_run: dict
) -> Iterator[dict]:
    """The session's tiny denoiser and tiny digits classifier; right after, the two servers of the serving
    tests start in the background (ready by the time those tests run). The module runs on one intra-op
    thread (faster for these tiny models on 2 shared cores)."""
    from imagelab.tasks.export import export

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("deploy")
    den, cls = _trained(tiny_denoise_run), _trained(tiny_classifier_run)
    serve = root / "serve"
    export(compose("export", [f"ckpt_path={cls['ckpt']}", "bench.metric=false"], output_dir=serve))
    started = [
        Server(
            serve, f"ckpt_path={den['ckpt']}", "max_pixels=20000", "max_upload_mb=0.2", "batch_timeout=0.3"
        ),
        Server(serve, f"model_path={serve / 'model.onnx'}", "top_k=3"),
    ]
    try:
        yield {
            "root": root,
            "denoiser": den,
            "classifier": cls,
            "servers": started,
            "onnx": serve / "model.onnx",
        }
    finally:
        for server in started:
            server.stop()
        torch.set_num_threads(threads)


def _task(name: str, out: Path, *overrides: str) -> dict:
    """Run the export or compress task in-process; returns its result and report.json."""
    from imagelab.tasks.compress import compress
    from imagelab.tasks.export import export

    cfg = compose(name, [*BENCH, *overrides], output_dir=out)
    result = (export if name == "export" else compress)(cfg)
    return {"result": result, "report": json.loads((out / "report.json").read_text()), "out": out}


# ----------------------------------------------------------------------------------------------- export


def test_onnx_export_has_dynamic_shapes_metadata_parity_and_report(runs: dict, tmp_path: Path) -> None:
    import onnxruntime as ort

    from imagelab.deploy.exported_model import read_metadata

    den = runs["denoiser"]
    done = _task("export", tmp_path, f"ckpt_path={den['ckpt']}", "format=onnx")
    path = tmp_path / "model.onnx"
    meta = read_metadata(path)
    assert meta["kind"] == "denoiser" and meta["channels"] == 1 and meta["network"]["width"] == 16
    assert json.loads((tmp_path / "model.onnx.json").read_text()) == meta
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and isinstance(shape[2], str) and isinstance(shape[3], str)
    x = np.random.default_rng(0).random((3, 1, 37, 52), dtype=np.float32)
    assert session.run(None, {"input": x})[0].shape == (3, 1, 37, 52)  # any batch and size
    fp32, onnx_row = done["report"]["rows"]
    assert onnx_row["max_abs_diff_vs_reference"] <= 1e-4 and onnx_row["size_mb"] > 0
    # the report scores the test split exactly as training did
    assert fp32["test_psnr"] == pytest.approx(den["metrics"]["test/psnr"], abs=1e-3)
    assert onnx_row["test_psnr"] == pytest.approx(fp32["test_psnr"], abs=1e-3)
    assert all(row["latency_ms_b1"] > 0 and row["latency_ms_per_image_b3"] > 0 for row in (fp32, onnx_row))
    assert "| exported onnx | onnxruntime |" in (tmp_path / "report.md").read_text()


def test_parity_failure_fails_the_export_and_removes_the_file(runs: dict, tmp_path: Path) -> None:
    ckpt = runs["classifier"]["ckpt"]
    with pytest.raises(UserError, match="parity check failed"):
        _task("export", tmp_path, f"ckpt_path={ckpt}", "format=onnx", "parity_tolerance=1e-12")
    assert not (tmp_path / "model.onnx").exists() and (tmp_path / "report.md").exists()
    with pytest.raises(UserError, match="format='tflite' is not supported"):
        _task("export", tmp_path, f"ckpt_path={ckpt}", "format=tflite")


def test_classifier_torchscript_and_safetensors_carry_preprocessing(runs: dict, tmp_path: Path) -> None:
    from safetensors import safe_open

    from imagelab.deploy.exported_model import read_metadata

    ckpt = runs["classifier"]["ckpt"]
    script = _task("export", tmp_path / "ts", f"ckpt_path={ckpt}", "format=torchscript")
    meta = read_metadata(tmp_path / "ts" / "model.pt")  # from the archive's extra files
    assert meta["kind"] == "classifier" and meta["class_names"] == [str(i) for i in range(10)]
    assert meta["preprocess"]["image_size"] == [16, 16] and len(meta["preprocess"]["mean"]) == 1
    assert script["report"]["rows"][1]["max_abs_diff_vs_reference"] <= 1e-4
    rows = script["report"]["rows"]
    assert rows[1]["test_accuracy"] == pytest.approx(rows[0]["test_accuracy"], abs=1e-6)
    # predict.py on the TorchScript file gives the checkpoint's answers
    from datamodules.digits import digits_arrays
    from datamodules.image_io import write_image
    from imagelab.tasks.prediction import predict_files

    images, _ = digits_arrays()
    for i in range(6):
        write_image(tmp_path / "in" / f"d{i}.png", images[100 + i])
    args = {"input": str(tmp_path / "in"), "top_k": 2, "device": "cpu"}
    via_file = predict_files(OmegaConf.create({**args, "model_path": str(tmp_path / "ts" / "model.pt")}))
    via_ckpt = predict_files(OmegaConf.create({**args, "ckpt_path": ckpt}))
    for (name_a, top_a), (name_b, top_b) in zip(
        via_file["predictions"], via_ckpt["predictions"], strict=True
    ):
        assert name_a == name_b and [c for c, _ in top_a] == [c for c, _ in top_b]
        assert [p for _, p in top_a] == pytest.approx([p for _, p in top_b], abs=1e-5)
    _task("export", tmp_path / "st", f"ckpt_path={ckpt}", "format=safetensors", "bench.metric=false")
    with safe_open(str(tmp_path / "st" / "model.safetensors"), "pt") as fh:
        assert json.loads(fh.metadata()["imagelab"])["class_names"] == meta["class_names"]
        assert "stem.0.weight" in list(fh.keys())


def test_lora_checkpoint_exports_merged(runs: dict, tmp_path: Path) -> None:
    import onnx

    from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
    from imagelab.deploy.exported_model import ExportedModel
    from lightning_modules.finetuning import LoRA, finetune_config

    ckpt = runs["classifier"]["ckpt"]
    checkpoint, run_cfg = load_run_checkpoint(ckpt)
    run_cfg.model.finetune = finetune_config({"strategy": "lora", "rank": 2})  # the older form still loads
    module = build_module_from_checkpoint(checkpoint, OmegaConf.create(checkpoint["run_config"]))
    module.net = LoRA(rank=2).apply(module.net)  # the trained weights get adapters
    torch.manual_seed(0)
    for name, param in module.named_parameters():
        if "lora_B" in name:  # trained adapters are non-zero; fresh ones would merge to nothing
            param.data.normal_(0.0, 0.05)
    lora_ckpt = tmp_path / "lora.ckpt"
    plain = {"state_dict": module.state_dict(), "run_config": OmegaConf.to_container(run_cfg)}
    torch.save(plain, lora_ckpt)
    module.eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        unmerged = module(x)
    _task("export", tmp_path, f"ckpt_path={lora_ckpt}", "format=onnx", "bench.metric=false")
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert not [i.name for i in graph.initializer if "lora" in i.name.lower()]
    exported = ExportedModel(tmp_path / "model.onnx").run(x)
    assert np.abs(exported - unmerged.numpy()).max() < 1e-4
    assert np.abs(unmerged.numpy() - _plain_logits(ckpt, x)).max() > 1e-3  # the adapters do change the output


def _plain_logits(ckpt: str, x: torch.Tensor) -> np.ndarray:
    from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint

    with torch.no_grad():
        return build_module_from_checkpoint(*load_run_checkpoint(ckpt))(x).numpy()


def _noisy_photos(folder: Path) -> list[Path]:
    """Real noisy photos: an 8-bit PNG and a 16-bit TIFF of scikit-image's camera."""
    from skimage import data

    from datamodules.image_io import write_image

    rng = np.random.default_rng(0)
    clean = data.camera()[120:184, 200:280].astype(np.float64)
    noisy8 = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
    noisy16 = np.clip(clean * 257 + rng.normal(0, 25 * 257, clean.shape), 0, 65535).round().astype(np.uint16)
    return [write_image(folder / "cam8.png", noisy8), write_image(folder / "cam16.tif", noisy16)]


def test_denoise_script_runs_the_onnx_file_without_lightning(runs: dict, tmp_path: Path) -> None:
    from datamodules.image_io import read_image
    from imagelab.tasks.inference import denoise_files

    ckpt = runs["denoiser"]["ckpt"]
    _task("export", tmp_path / "export", f"ckpt_path={ckpt}", "format=onnx", "bench.metric=false")
    _noisy_photos(tmp_path / "in")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPTS / "denoise.py"), f"model_path={tmp_path / 'export/model.onnx'}",
         f"input={tmp_path / 'in'}", f"output={tmp_path / 'onnx'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] == "lightning"}, "the exported path imported Lightning"
    cfg = OmegaConf.create({"ckpt_path": ckpt, "input": str(tmp_path / "in"), "output": str(tmp_path / "ckpt"),
                            "overwrite": False, "tile": 512, "overlap": 32, "device": "cpu"})  # fmt: skip
    denoise_files(cfg)
    for name, dtype in (("cam8.png", np.uint8), ("cam16.tif", np.uint16)):
        a, b = read_image(tmp_path / "onnx" / name), read_image(tmp_path / "ckpt" / name)
        assert a.dtype == b.dtype == dtype and a.shape == b.shape == (64, 80)
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1  # rounding of a ~1e-7 difference
    with pytest.raises(UserError, match="exactly one of ckpt_path"):
        denoise_files(OmegaConf.merge(cfg, {"model_path": str(tmp_path / "export/model.onnx")}))


# --------------------------------------------------------------------------------------------- compress


def test_compress_denoiser_then_finetune_the_pruned_checkpoint(runs: dict, tmp_path: Path) -> None:
    den = runs["denoiser"]
    done = _task("compress", tmp_path / "c", f"ckpt_path={den['ckpt']}", "method=all", "calibration_images=8")
    rows = {r["variant"]: r for r in done["report"]["rows"]}
    assert list(rows) == [
        "fp32",
        "onnx fp32",
        "onnx int8 dynamic",
        "onnx int8 static",
        "pruned 25% (before fine-tuning)",
    ]
    fp32, onnx_fp32, pruned = rows["fp32"], rows["onnx fp32"], rows["pruned 25% (before fine-tuning)"]
    assert fp32["test_psnr"] == pytest.approx(den["metrics"]["test/psnr"], abs=1e-3)
    for name in ("onnx int8 dynamic", "onnx int8 static"):
        assert rows[name]["size_mb"] < 0.75 * onnx_fp32["size_mb"]  # int8 weights: about a quarter + overhead
        assert abs(rows[name]["test_psnr"] - fp32["test_psnr"]) < 0.5  # int8 costs little on this net
    assert pruned["params"] < 0.7 * fp32["params"] and pruned["size_mb"] < fp32["size_mb"]
    info = done["report"]["info"]
    assert "model.net.width 16 -> 12" in info["pruning"]
    # fine-tune the pruned checkpoint with train.py's own overrides (as compress.py prints them)
    overrides = info["fine-tune with"].split(" ")[2:]
    assert (
        "model.net.width=12" in overrides
        and f"model.checkpoint_path={tmp_path / 'c' / 'pruned.ckpt'}" in overrides
    )
    base = [o for o in DENOISER if not o.startswith("model.net.width")]  # (in-process runs keep no .hydra/)
    tuned = _trained(train_in_process(tmp_path / "ft", *base, *overrides, "trainer.max_epochs=1", chdir=True))
    done = _task("compress", tmp_path / "c2", f"ckpt_path={den['ckpt']}", "method=prune",
                 f"finetuned_ckpt_path={tuned['ckpt']}")  # fmt: skip
    before, after = done["report"]["rows"][1:]
    assert after["variant"] == "pruned 25% + fine-tuned" and after["params"] == before["params"]
    assert after["test_psnr"] > before["test_psnr"] + 0.1  # fine-tuning recovers what pruning lost


def test_compress_classifier_int8_static_and_prune(runs: dict, tmp_path: Path) -> None:
    from lightning_modules.backbones import create_backbone, load_backbone_weights, read_weights_file

    ckpt = runs["classifier"]["ckpt"]
    done = _task(
        "compress", tmp_path, f"ckpt_path={ckpt}", "method=[int8_static,prune]", "calibration_images=16"
    )
    rows = done["report"]["rows"]
    assert [r["variant"] for r in rows] == [
        "fp32",
        "onnx fp32",
        "onnx int8 static",
        "pruned 25% (before fine-tuning)",
    ]
    assert rows[2]["test_accuracy"] > 0.5 and rows[2]["size_mb"] < 0.5 * rows[1]["size_mb"]  # chance is 0.1
    assert "calibrated" in rows[2]["quantization"] and "16 training images" in rows[2]["quantization"]
    md = (tmp_path / "report.md").read_text()
    assert md.count("\n| ") == 5 and "test accuracy" in md and "ms/image (batch 4)" in md
    # train.py's model.checkpoint_path reader loads the pruned checkpoint into the narrower small_cnn
    weights = read_weights_file(tmp_path / "pruned.ckpt")
    narrow = create_backbone("small_cnn", num_classes=10, in_chans=1, timm_kwargs={"widths": [12, 24, 48]})
    assert "loaded" in load_backbone_weights(narrow, weights, "pruned")
    wide = create_backbone("small_cnn", num_classes=10, in_chans=1, timm_kwargs={"widths": [16, 32, 64]})
    with pytest.raises(UserError, match="do not fit"):
        load_backbone_weights(wide, weights, "pruned")
    with pytest.raises(UserError, match="choose from"):
        _task("compress", tmp_path, f"ckpt_path={ckpt}", "method=int4")


# ---------------------------------------------------------------------------------------------- serving


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``scripts/serve.py`` as a subprocess on a free port of 127.0.0.1 (its own process group, always stopped)."""

    def __init__(self, cwd: Path, *overrides: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"server_{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "serve.py"), *overrides, f"port={self.port}"],
                cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Poll /health until it answers 200 (bounded); fail with the server's log otherwise."""
        wait_until_healthy(self.url, self.proc, self.log, timeout)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 15 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)


@pytest.fixture(scope="module")
def servers(runs: dict) -> dict:
    """The denoiser served from its checkpoint and the classifier served from its ONNX export, once ready."""
    for server in runs["servers"]:
        server.wait_ready()
    return {"denoiser": runs["servers"][0], "classifier": runs["servers"][1], "onnx": runs["onnx"]}


def _post(url: str, name: str, data: bytes, mime: str = "application/octet-stream") -> object:
    import httpx

    return httpx.post(f"{url}/predict", files={"file": (name, data, mime)}, timeout=60)


def test_server_denoises_like_denoise_py_under_concurrent_clients(
    servers: dict, runs: dict, tmp_path: Path
) -> None:
    import httpx

    from datamodules.image_io import read_image
    from imagelab.tasks.inference import denoise_files

    files = _noisy_photos(tmp_path / "in")
    cfg = OmegaConf.create({"ckpt_path": runs["denoiser"]["ckpt"], "input": str(tmp_path / "in"),
                            "output": str(tmp_path / "out"), "overwrite": False, "tile": 512, "overlap": 32,
                            "device": "cpu"})  # fmt: skip
    denoise_files(cfg)
    url = servers["denoiser"].url
    assert httpx.get(f"{url}/health", timeout=10).text == "ok"
    jobs = [files[i % 2] for i in range(7)] + [None]  # 8 clients at once, one of them sending text

    def send(file: Path | None) -> object:
        return (
            _post(url, "notes.txt", b"not an image")
            if file is None
            else _post(url, file.name, file.read_bytes())
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    assert answers[-1].status_code == 415  # refused alone: its batch-mates still get their images
    assert max(int(a.headers["x-batch-size"]) for a in answers[:-1]) > 1  # concurrent requests were batched
    for file, answer in zip(jobs[:-1], answers[:-1], strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == ("image/png" if file.suffix == ".png" else "image/tiff")
        suffix = file.suffix
        got_path = tmp_path / f"got{suffix}"
        got_path.write_bytes(answer.content)
        got, want = read_image(got_path), read_image(tmp_path / "out" / file.name)
        assert got.dtype == want.dtype and got.shape == want.shape  # same format and bit depth
        assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 1


def test_server_refuses_bad_input_with_4xx(servers: dict) -> None:
    import httpx
    from PIL import Image

    url = servers["denoiser"].url

    def png(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    cases = {
        415: [_post(url, "a.txt", b"hello"), httpx.post(f"{url}/predict", content=b"raw bytes", timeout=30)],
        400: [
            _post(url, "a.png", b"\x89PNG\r\n\x1a\ntruncated"),
            httpx.post(f"{url}/predict", content=b"--b\r\njunk", headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30),
            httpx.post(f"{url}/predict", files={"other": ("a.png", png(np.zeros((8, 8), np.uint8)))}, timeout=30),
        ],
        422: [_post(url, "rgb.png", png(np.zeros((16, 16, 3), np.uint8)))],  # a grayscale model
        413: [_post(url, "big.png", png(np.zeros((200, 200), np.uint8))),  # 40,000 > max_pixels=20,000
              _post(url, "big.tif", b"II*\x00" + bytes(300_000))],  # 0.3 MB > max_upload_mb=0.2
    }  # fmt: skip
    for status, answers in cases.items():
        for answer in answers:
            assert answer.status_code == status, answer.text
            assert answer.json()["error"]  # one readable reason
    assert _post(url, "ok.png", png(np.full((8, 8), 128, np.uint8))).status_code == 200  # still serving
    assert "Traceback" not in servers["denoiser"].log.read_text()


def test_server_classifies_like_predict_py_from_the_onnx_file(servers: dict, tmp_path: Path) -> None:
    from datamodules.digits import digits_arrays
    from datamodules.image_io import write_image
    from imagelab.tasks.prediction import predict_files

    images, labels = digits_arrays()
    files = [write_image(tmp_path / "in" / f"d{i}.png", images[i]) for i in range(8)]
    cfg = OmegaConf.create({"model_path": str(servers["onnx"]), "input": str(tmp_path / "in"), "top_k": 3,
                            "device": "cpu"})  # fmt: skip
    expected = dict(predict_files(cfg)["predictions"])
    url = servers["classifier"].url
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: _post(url, f.name, f.read_bytes()), files))
    correct = 0
    for file, label, answer in zip(files, labels[:8], answers, strict=True):
        assert answer.status_code == 200, answer.text
        top = answer.json()["top_k"]
        want = expected[file.name]
        assert [t["class"] for t in top] == [name for name, _ in want]
        assert [t["prob"] for t in top] == pytest.approx([p for _, p in want], abs=1e-5)
        correct += top[0]["class"] == str(label)
    assert correct >= 6  # the tiny classifier reads the digits (chance: 1 in 10)


def test_entry_points_stay_light(tmp_path: Path) -> None:
    for script in ("export.py", "compress.py", "serve.py"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(REPO_ROOT / "scripts" / script), "--cfg", "job"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not {
            m for m in imported if m.split(".")[0] in ("torch", "lightning", "onnxruntime", "litserve")
        }
