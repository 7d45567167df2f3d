"""The whole-process comparison with timm's own ``train.py`` on the same job (the ``timm_train`` section).

timm's ``train.py`` is not part of the timm wheel: the user points ``timm_train_script`` at a copy (from
github.com/huggingface/pytorch-image-models); without one the section is skipped with a message. The job:
ResNet-18 from scratch on scikit-learn's digits upscaled to 32 px, written as an image folder
(``train/<class>/`` 80 % and ``val/<class>/`` 20 % of each class), batch 64, AdamW lr 1e-3 with weight decay
0.05, a cosine schedule without warm-up, no augmentation, no label smoothing, ``epochs`` epochs on the CPU.
timm's script and ``scripts/train.py`` (CSV logger, no test pass) alternate; each pair gives the whole
process's wall time, its CPU time (children's user + system) and the best validation accuracy.

Three settings of ``scripts/train.py`` are set to what timm's script does on this job, since they are part of
the job rather than of either program: the data-loader workers persist across epochs (timm's
``create_loader`` default), each epoch's last partial training batch is dropped (timm's training loader), and
no sanity validation runs before training (timm has none). Both programs validate after every epoch and write
their checkpoints and metrics every epoch.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from imagelab.core.errors import UserError
from imagelab.tasks.benchmark.timing import median

TRAIN_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train.py"
SKIPPED = (
    "skipped: set timm_train_script=/path/to/pytorch-image-models/train.py (timm's train.py is not in the "
    "timm wheel) to compare with it"
)


def write_digits_32px(root: Path, val_every: int = 5) -> Path:
    """scikit-learn's digits as 32 x 32 RGB PNGs: every ``val_every``-th image of a class goes to val/."""
    from PIL import Image

    from datamodules.digits import digits_arrays

    if (root / "done").is_file():
        return root
    images, labels = digits_arrays()
    seen: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        k = seen[int(label)] = seen.get(int(label), -1) + 1
        split = "val" if k % val_every == 0 else "train"
        target = root / split / str(int(label)) / f"{i:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(np.ascontiguousarray(image)).resize((32, 32), Image.BICUBIC).convert("RGB")
        big.save(target)
    (root / "done").write_text("1797 digits\n")
    return root


def timm_command(script: Path, data: Path, out: Path, epochs: int, workers: int) -> list[str]:
    """timm's train.py on the job (see the module docstring)."""
    return [
        sys.executable, str(script), "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
        "--model", "resnet18", "--num-classes", "10", "--img-size", "32", "--crop-pct", "1.0",
        "-b", "64", "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05", "--sched", "cosine",
        "--epochs", str(epochs), "--warmup-epochs", "0", "--no-aug", "--smoothing", "0", "--device", "cpu",
        "--no-prefetcher", "--workers", str(workers), "--checkpoint-hist", "1", "--output", str(out),
        "--experiment", "run",
    ]  # fmt: skip


def ours_command(data: Path, epochs: int, workers: int) -> list[str]:
    """``scripts/train.py`` on the same job (with timm's loader and sanity-check settings: module docstring)."""
    return [
        sys.executable, str(TRAIN_SCRIPT), "model=classifier", "model.backbone=resnet18", "model.pretrained=false",
        "data=image_folder", f"data.root={data}", "data.image_size=32", "data.augment=none", "data.batch_size=64",
        f"data.num_workers={workers}", "model.optimizer.lr=1e-3", "model.optimizer.weight_decay=0.05",
        "model.scheduler.warmup_epochs=0", "model.scheduler.min_lr_ratio=0", f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu", "logger=csv", "test=false", "callbacks.early_stopping=null",
        "data.persistent_workers=true", "data.drop_last=true", "+trainer.num_sanity_val_steps=0",  # as timm's
    ]  # fmt: skip


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and CPU seconds (user + system of the finished child processes)."""
    cwd.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _timm_best_acc(out: Path) -> float:
    with open(out / "run" / "summary.csv") as f:
        return max(float(row["eval_top1"]) for row in csv.DictReader(f)) / 100.0


def _our_best_acc(cwd: Path) -> float:
    [record] = list((cwd / "outputs" / "train" / "runs").glob("*/metrics.json"))
    return float(json.loads(record.read_text())["metrics"]["val/acc_best"])


def timm_train_section(script: str | None, epochs: int, repeats: int, work: Path) -> dict[str, Any]:
    """timm's train.py against scripts/train.py on the same job, alternating; skipped without a script."""
    if not script:
        return {"skipped": SKIPPED}
    path = Path(script).expanduser()
    if not path.is_file():
        raise UserError(f"timm_train_script={script}: no such file; {SKIPPED.split(': ', 1)[1]}")
    data = write_digits_32px(work / "digits32")
    workers = min(4, os.cpu_count() or 1)
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    pairs = []
    for rep in range(repeats):
        out = work / f"timm_{rep}"
        timm_wall, timm_cpu = _timed(timm_command(path, data, out, epochs, workers), work, env)
        ours_dir = work / f"ours_{rep}"
        ours_wall, ours_cpu = _timed(ours_command(data, epochs, workers), ours_dir, env)
        pairs.append(
            {
                "timm_s": timm_wall,
                "ours_s": ours_wall,
                "timm_cpu_s": timm_cpu,
                "ours_cpu_s": ours_cpu,
                "timm_best_val_acc": _timm_best_acc(out),
                "ours_best_val_acc": _our_best_acc(ours_dir),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(ours_dir, ignore_errors=True)
    return {
        "epochs": epochs,
        "timm_command": " ".join(
            timm_command(Path("train.py"), Path("DATA"), Path("OUT"), epochs, workers)[1:]
        ),
        "ours_command": " ".join(["scripts/train.py", *ours_command(Path("DATA"), epochs, workers)[2:]]),
        "pairs": pairs,
        "ratio": median([p["ours_s"] / p["timm_s"] for p in pairs]),
        "cpu_ratio": median([p["ours_cpu_s"] / p["timm_cpu_s"] for p in pairs]),
    }
