"""DDP gives the single-process numbers: 2 gloo processes x batch 8 == 1 process x batch 16, same metrics.

The loader path hands DDP rank r the patches r, r + 2, ... of each epoch, so both runs train on the same
global batches; DDP averages the two half-batch gradients, which equals the full-batch gradient (no batch
norm: PyTorch's SyncBatchNorm needs GPUs). Validation/test use an odd number of images scored exactly once
(Lightning's default sampler would pad rank 1 with a duplicate of image 0 and shift the mean PSNR).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.denoising import DenoisingDataModule
from imagelab.core.errors import UserError
from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.overrides import DDP_EQUALITY as COMMON
from tests.helpers.overrides import DDP_SPLIT as SPLIT
from tests.helpers.runs import read_metrics, run_script, single_run_dir


class _FakeTrainer:
    """What the data module asks a Trainer: rank, world size and device."""

    def __init__(self, rank: int, world: int) -> None:
        self.global_rank, self.world_size = rank, world

        class _Strategy:
            root_device = torch.device("cpu")

        self.strategy = _Strategy()


def _module(rank: int, world: int, batch_size: int) -> DenoisingDataModule:
    torch.manual_seed(0)  # the data seed is peeked from torch's RNG, as after seed_everything in every rank
    dm = DenoisingDataModule(
        source={"_target_": "datamodules.clean_sources.SkimagePhotos", "images": SPLIT},
        patch_size=16,
        patches_per_epoch=40,
        batch_size=batch_size,
        eval_crop=32,
    )
    dm.trainer = _FakeTrainer(rank, world)  # type: ignore[assignment]
    dm.setup("fit")
    return dm


def test_ranks_split_patches_and_eval_images_without_overlap_or_duplicates() -> None:
    single = _module(0, 1, 8)
    ranks = [_module(r, 2, 4) for r in range(2)]
    for epoch in (0, 3):
        reference = _iter(single, epoch)
        per_rank = [_iter(dm, epoch) for dm in ranks]
        assert len(reference) == len(per_rank[0]) == len(per_rank[1]) == 5
        for step, (noisy, clean) in enumerate(reference):
            # global batch of step s = rank 0's and rank 1's batches interleaved
            merged_clean = torch.stack([per_rank[s % 2][step][1][s // 2] for s in range(8)])
            merged_noisy = torch.stack([per_rank[s % 2][step][0][s // 2] for s in range(8)])
            assert torch.equal(merged_clean, clean) and torch.equal(merged_noisy, noisy)
    # evaluation: every image exactly once, in one piece
    for split in ("val", "test"):
        reference = torch.cat([c for _, c in single._loader(split, 1)])
        got = [torch.cat([c for _, c in dm._loader(split, 1)]) for dm in ranks]
        assert [len(g) for g in got] == [2, 1]
        assert torch.equal(torch.stack([got[0][0], got[1][0], got[0][1]]), reference)


def _iter(dm: DenoisingDataModule, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_more_processes_than_eval_images_is_a_user_error() -> None:
    dm = _module(0, 4, 4)
    with pytest.raises(UserError, match=r"3 item.*4 processes"):
        dm.val_dataloader()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    single_root, ddp_root = tmp_path / "single", tmp_path / "ddp"
    single_root.mkdir()
    ddp_root.mkdir()
    run_script("train.py", *COMMON, "trainer=cpu", "data.batch_size=16", cwd=single_root, timeout=400)
    run_script("train.py", *COMMON, "trainer=ddp_sim", "data.batch_size=8", cwd=ddp_root, timeout=400)

    results = {}
    for name, root in (("single", single_root), ("ddp", ddp_root)):
        run_dir = single_run_dir(root)  # one run directory, also for two processes
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "completed"
        runs = find_offline_runs(root)
        assert len(runs) == 1, f"{name}: expected one W&B run, found {runs}"
        history = read_offline_run(runs[0])["history"]
        logged_val = [row["val/psnr"] for row in history if "val/psnr" in row]
        assert len(logged_val) == 2  # one per epoch, logged once
        assert logged_val[-1] == pytest.approx(metrics["metrics"]["val/psnr"], abs=1e-4)
        assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2  # best + last, by rank 0 only
        results[name] = metrics["metrics"]

    single, ddp = results["single"], results["ddp"]
    # training moved the weights (equal metrics are not just equal initial weights)
    assert single["val/psnr"] > single["val/psnr_noisy"] + 0.1
    for key in ("val/psnr", "val/psnr_noisy", "test/psnr", "test/psnr_noisy"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-3), key
    for key in ("val/ssim", "test/ssim"):
        assert ddp[key] == pytest.approx(single[key], abs=2e-4), key
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-3)
