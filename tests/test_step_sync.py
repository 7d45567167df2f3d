"""The run guards neither read a device value on the host nor run a collective on every training step.

They record each step on the device and read / agree only at the check points of
``imagelab.callbacks.check_points`` (every ``guard_every_n_steps`` batches and each epoch's last batch), while
a NaN loss still fails the run naming its step and a signal still stops every process at the same step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from imagelab.callbacks.check_points import is_check_batch  # noqa: E402
from imagelab.callbacks.graceful_interrupt import GracefulInterrupt  # noqa: E402
from imagelab.callbacks.nonfinite_guard import NonFiniteLossGuard  # noqa: E402
from imagelab.callbacks.step_hooks import STEP_HOOKS, SkipNoOpStepHooks  # noqa: E402
from imagelab.core.errors import TrainingDiverged  # noqa: E402
from lightning_modules.denoiser import DenoiserModule  # noqa: E402
from tests.helpers.fault_injection import PoisonWeightsAtStep  # noqa: E402
from tests.helpers.overrides import FAST_DENOISE  # noqa: E402
from tests.helpers.paths import REPO_ROOT  # noqa: E402
from tests.helpers.runs import run_script  # noqa: E402
from tests.helpers.sync_counting import SyncCounter  # noqa: E402

NET = {"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 2, "width": 4}


def _fit(batches: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    """Fit a tiny denoiser for one epoch of ``batches`` batches of 4 with ``callbacks`` (no logger)."""
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4 * batches, 1, 8, 8, generator=g)
    data = TensorDataset(clean + 0.1 * torch.randn(clean.shape, generator=g), clean)
    torch.manual_seed(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(DenoiserModule(net=NET, scheduler=None, num_panels=0), DataLoader(data, batch_size=4))
    return trainer


def _expected(windows: list[dict], every: int, per_check: int) -> list[int]:
    """``per_check`` at each check batch (every ``every``-th and the epoch's last), else 0."""
    return [per_check if (w["batch"] + 1) % every == 0 or w["last"] else 0 for w in windows]


def test_guards_read_the_loss_only_at_check_points(tmp_path: Path) -> None:
    path = tmp_path / "counts.json"
    _fit(10, [NonFiniteLossGuard(check_every_n_steps=4), GracefulInterrupt(4), SyncCounter(str(path))])
    windows = json.loads(path.read_text())
    assert [w["batch"] for w in windows] == list(range(10))
    # one host read (the recorded losses' finite flags) at batches 3, 7 and 9 (the last), none elsewhere
    assert [w["host_reads"] for w in windows] == _expected(windows, 4, 1) == [0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    assert all(w["collectives"] == 0 for w in windows)  # one process: nothing to agree on


def test_a_nan_loss_fails_at_the_next_check_point_naming_its_step(tmp_path: Path) -> None:
    seen = SyncCounter(str(tmp_path / "counts.json"))
    guard = NonFiniteLossGuard(check_every_n_steps=4)
    with pytest.raises(TrainingDiverged) as info:
        _fit(12, [PoisonWeightsAtStep(5), guard, seen])  # the loss of step 6 (batch 5) is the first NaN
    message = str(info.value)
    assert message.startswith("the training loss became nan at step 6 (epoch 0, batch 5)"), message
    assert "and at 2 later step(s) up to step 8" in message  # found at the check point after batch 7
    assert [w["batch"] for w in seen.windows] == list(range(7))  # batch 7 began, batch 8 never did


def test_a_nan_loss_with_a_check_every_step_fails_at_that_step() -> None:
    with pytest.raises(TrainingDiverged, match=r"became nan at step 6 \(epoch 0, batch 5\): lower"):
        _fit(12, [PoisonWeightsAtStep(5), NonFiniteLossGuard(check_every_n_steps=1)])


def test_check_points_and_bad_intervals() -> None:
    class Trainer:
        num_training_batches, max_steps, global_step = 10, -1, 0

    assert [b for b in range(10) if is_check_batch(Trainer, b, 4)] == [3, 7, 9]
    Trainer.max_steps, Trainer.global_step = 5, 5  # the run's last step
    assert is_check_batch(Trainer, 4, 4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_every_n_steps must be a positive integer"):
            NonFiniteLossGuard(check_every_n_steps=bad)
        with pytest.raises(ValueError, match="guard_every_n_steps"):
            GracefulInterrupt(bad)


@pytest.mark.slow
def test_ddp_runs_no_collective_and_no_host_read_per_step(tmp_path: Path) -> None:
    """2 gloo processes, 8 batches each; the guards read and agree every 3 batches and at the last one."""
    counts = tmp_path / "counts.json"
    run_script(
        "train.py",
        *FAST_DENOISE,
        "trainer=ddp_sim",
        "trainer.max_epochs=1",
        "data.patches_per_epoch=512",  # batch 32, 2 processes: 8 batches each
        "logger=none",
        "test=false",
        "guard_every_n_steps=3",
        "+callbacks.sync_counter._target_=tests.helpers.sync_counting.SyncCounter",
        f"+callbacks.sync_counter.path={counts}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT)},  # the counter lives in tests.helpers
    )
    for rank in (0, 1):
        windows = json.loads(Path(f"{counts}.rank{rank}").read_text())
        assert [w["batch"] for w in windows] == list(range(8))
        # one all-reduce per guard (the NaN guard's and the signal agreement) at each check batch, no
        # collective of the project's code elsewhere (Lightning's own per-step SIGTERM broadcast aside)
        reduces = [sum(c.startswith("all_reduce ") for c in w["calls"]) for w in windows]
        assert reduces == _expected(windows, 3, 2), windows
        assert [w["collectives"] == 0 for w in windows] == [not n for n in _expected(windows, 3, 1)], windows
        assert [w["host_reads"] for w in windows] == _expected(windows, 3, 1), windows
        assert all(w["lightning_collectives"] == 1 for w in windows[:-1]), windows


def test_empty_step_hooks_are_hidden_from_lightning_while_fitting() -> None:
    class Quiet(pl.Callback):
        """Implements no hook."""

    class Probe(pl.Callback):
        """Records, during a step, which step hooks Lightning would find callable."""

        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            self.seen = {
                (type(c).__name__, h): callable(getattr(c, h)) for c in (quiet, self) for h in STEP_HOOKS
            }

    quiet, probe = Quiet(), Probe()
    _fit(2, [quiet, probe, SkipNoOpStepHooks()])
    assert probe.seen[("Probe", "on_train_batch_end")]  # a hook the callback implements is kept
    hidden = {key for key, found in probe.seen.items() if not found}
    assert hidden == {(name, h) for name in ("Quiet", "Probe") for h in STEP_HOOKS} - {
        ("Probe", "on_train_batch_end")
    }
    assert not set(STEP_HOOKS) & (set(vars(quiet)) | set(vars(probe)))  # given back after the fit


def test_the_checkpoint_weight_check_names_a_non_finite_weight_and_passes_huge_finite_ones() -> None:
    from imagelab.callbacks.nonfinite_guard import _non_finite_weight

    model = DenoiserModule(net=NET, scheduler=None, num_panels=0)
    assert _non_finite_weight(model) is None
    weights = dict(model.named_parameters())
    name = max(weights, key=lambda n: weights[n].numel())
    with torch.no_grad():
        weights[name].fill_(3e38)  # finite, but its float32 sum overflows: looked at tensor by tensor
        assert _non_finite_weight(model) is None
        weights[name].view(-1)[0] = float("-inf")
        assert _non_finite_weight(model) == name
