"""Hydra override lists for small, fast runs of each task, shared by every test that trains something.

Add the test's own overrides after one of these lists: for a plain key the last value wins. A config group
(``logger=``, ``data=``, ...) may appear once only, so the lists that pick a logger take it as an argument.
"""

from __future__ import annotations

# No progress bar or model summary in the captured output.
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]

# Two epochs of a depth-5 DnCNN on 256 patches of the bundled photos: ~16 steps, seconds on a CPU.
DENOISE_TWO_EPOCHS = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.patches_per_epoch=256",
    "data.eval_crop=96",
    "model.net.depth=5",
    "model.net.width=16",
]


def fast_denoise(logger: str = "wandb") -> list[str]:
    """The two-epoch denoiser run (``DENOISE_TWO_EPOCHS``), quiet, logging to ``logger``."""
    return [f"logger={logger}", *QUIET, *DENOISE_TWO_EPOCHS]


# The two-epoch denoiser logging to W&B (offline): the runs started through scripts/train.py.
FAST_DENOISE = fast_denoise("wandb")


def sweep_denoise(logger: str = "csv") -> list[str]:
    """One epoch of 64 patches of a depth-3 DnCNN: each job of a test sweep trains in a few seconds."""
    return [
        *fast_denoise(logger),
        "trainer.max_epochs=1",
        "data.patches_per_epoch=64",
        "data.eval_crop=64",
        "model.net.depth=3",
    ]


# One epoch of 64 patches in batches of 16 (4 steps) of a depth-3 width-8 DnCNN, for in-process runs.
ONE_EPOCH_DENOISE = [
    "logger=csv",
    *QUIET,
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "data.patches_per_epoch=64",
    "data.batch_size=16",
    "data.eval_crop=32",
    "model.net.depth=3",
    "model.net.width=8",
]

# Four training steps (fast_dev_run: no checkpoints, 4 val and test batches at most), no image panels: for
# checks of what a run set up; the zero-initialised last layer starts as the identity, and 4 steps already
# beat the noisy input by ~0.2 dB.
FOUR_STEP_DENOISE = [
    *ONE_EPOCH_DENOISE,
    "+trainer.fast_dev_run=4",
    "data.patches_per_epoch=32",
    "data.batch_size=8",
    "model.num_panels=0",
]

# Two epochs of the small CNN on scikit-learn's digits: ~94 % test accuracy, seconds on a CPU core.
DIGITS = ["experiment=digits_small_cnn", "logger=none", *QUIET, "trainer.max_epochs=2"]


DDP_SPLIT = {  # the DDP equality runs' images: uneven per-process eval shares
    "train": ["brick", "cell", "clock", "grass", "gravel", "page"],
    "val": ["coins", "moon", "camera"],  # 3 images on 2 processes: rank 0 scores 2, rank 1 scores 1
    "test": ["astronaut", "chelsea", "rocket"],
}
# A tiny run whose val/test metrics must be the same on 1 process and on 2 (DDP equality tests)
DDP_EQUALITY = [
    "logger=wandb",
    *QUIET,
    "trainer.max_epochs=2",
    "data.patches_per_epoch=96",
    "data.eval_crop=64",
    "data.eval_batch_size=1",  # uneven numbers of eval batches per process (2 and 1)
    f"data.source.images.train=[{','.join(DDP_SPLIT['train'])}]",
    f"data.source.images.val=[{','.join(DDP_SPLIT['val'])}]",
    f"data.source.images.test=[{','.join(DDP_SPLIT['test'])}]",
    "model.net.depth=4",
    "model.net.width=8",
    "model.net.batch_norm=false",
    "model.num_panels=0",
    "tags=[pytest]",
]

# The smallest denoiser run that still writes every file (docs commands, the server's tests)
TINY_DENOISE = [
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "data.patches_per_epoch=32",
    "data.batch_size=16",
    "data.eval_crop=32",
    "model.net.depth=2",
    "model.net.width=4",
]
