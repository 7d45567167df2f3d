"""GPU paths on a real GPU (marker ``gpu``; skipped without CUDA): run by ``scripts/gpu_check.sh``.

bf16 training steps, channels-last + ``torch.compile`` (Inductor), the GPU-resident data modules on the device
and DDP with one process over NCCL. ``IMAGELAB_GPU_TESTS_ON_CPU=1`` runs the same tests on the CPU (gloo
instead of NCCL, the ``aot_eager`` compile backend) to check the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import FAST_DENOISE, ONE_EPOCH_DENOISE
from tests.helpers.runs import read_metrics, run_script, single_run_dir

ON_CPU = os.environ.get("IMAGELAB_GPU_TESTS_ON_CPU") == "1"
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
ACCELERATOR = "gpu" if CUDA else "cpu"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (CUDA or ON_CPU), reason="needs a CUDA GPU (IMAGELAB_GPU_TESTS_ON_CPU=1: on the CPU)"
    ),
    pytest.mark.usefixtures("restore_torch_flags"),
]

# Three steps of batch 32 of a depth-4 DnCNN on the device.
TINY = [
    *ONE_EPOCH_DENOISE,
    f"trainer.accelerator={ACCELERATOR}",
    "trainer.devices=1",
    "+trainer.max_steps=3",
    "data.patches_per_epoch=96",
    "data.batch_size=32",
    "data.eval_crop=64",
    "model.net.depth=4",
    "model.net.width=16",
    "model.num_panels=0",
]


def _train(tmp_path: Path, *overrides: str) -> dict:
    """The three steps on the device, with ``overrides``, in this process."""
    return train_in_process(tmp_path, *TINY, *overrides)


def test_bf16_training_steps_on_the_device(tmp_path: Path) -> None:
    result = _train(tmp_path, "trainer.precision=bf16-mixed")
    trainer = result["trainer"]
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 3
    assert trainer.strategy.root_device.type == DEVICE
    assert next(trainer.lightning_module.parameters()).dtype == torch.float32  # autocast, fp32 weights
    metrics = result["metrics"]
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and metrics["test/psnr"] > 15


def test_channels_last_and_compile(tmp_path: Path) -> None:
    backend = "inductor" if CUDA else "aot_eager"  # Inductor on CPU compiles for tens of seconds
    result = _train(tmp_path, "speed=compile", "speed.channels_last=true", f"speed.compile_backend={backend}")
    module = result["trainer"].lightning_module
    weight = next(p for p in module.net.parameters() if p.ndim == 4 and p.shape[1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.device.type == DEVICE
    assert module.net._compiled_call_impl is not None
    assert result["trainer"].global_step == 3 and result["metrics"]["test/psnr"] > 15


def test_gpu_resident_data_modules_make_batches_on_the_device(tmp_path: Path) -> None:
    result = _train(tmp_path, "data=denoise_photos_gpu")
    datamodule = result["trainer"].datamodule
    noisy, clean = next(iter(datamodule.train_dataloader()))
    assert noisy.device.type == DEVICE and noisy.shape == (32, 1, 40, 40) and noisy.dtype == torch.float32
    assert 20 < float((noisy - clean).std()) * 255 < 30  # sigma 25
    assert result["metrics"]["test/psnr"] > 15

    from datamodules.cifar10_reader import write_cifar10_like
    from datamodules.gpu_resident_cifar10 import GPUResidentCIFAR10ClassificationDataModule

    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (80, 32, 32, 3), dtype=torch.uint8, generator=rng).numpy()
    labels = torch.arange(80) % 4
    write_cifar10_like(
        tmp_path / "cifar", images, labels.numpy(), images[:8], labels[:8].numpy(), list("abcd")
    )
    cifar = GPUResidentCIFAR10ClassificationDataModule(
        root=str(tmp_path / "cifar"), download=False, val_size=8, batch_size=16, device=DEVICE
    )
    cifar.setup("fit")
    x, y = next(iter(cifar.train_dataloader()))
    assert x.device.type == DEVICE and x.shape == (16, 3, 32, 32) and y.device.type == DEVICE


def test_ddp_one_process(tmp_path: Path) -> None:
    backend = "nccl" if CUDA else "gloo"
    fast = [o for o in FAST_DENOISE if not o.startswith("trainer.accelerator=")]
    proc = run_script(
        "train.py",
        *fast,
        "trainer=ddp",
        f"trainer.accelerator={ACCELERATOR}",
        "trainer.devices=1",
        "trainer.precision=32-true" if not CUDA else "trainer.precision=bf16-mixed",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )
    assert f"distributed_backend={backend}" in proc.stdout + proc.stderr
    run_dir = single_run_dir(tmp_path)
    assert read_metrics(run_dir)["status"] == "completed"
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2
