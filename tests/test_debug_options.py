"""The smaller console/debug behaviours of issue 10: trainer=gpu without CUDA, the profiler's printed report,
debug runs that leave no checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagelab.core.errors import UserError
from tests.helpers.compose import compose


def test_gpu_trainer_without_cuda_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    from imagelab.config.instantiation import instantiate_node
    from imagelab.core.accelerator_check import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose("train", ["trainer=gpu"], output_dir=tmp_path)
    with pytest.raises(UserError, match=r"no GPU is visible.*use trainer=cpu"):
        instantiate_node(cfg.trainer, "trainer")
    check_accelerator(compose("train", ["trainer=cpu"], output_dir=tmp_path).trainer)  # fine
    check_accelerator(compose("train", [], output_dir=tmp_path).trainer)  # auto: fine


def test_fast_dev_run_and_overfit_keep_no_checkpoints(tmp_path: Path) -> None:
    for name in ("fast_dev_run", "overfit"):
        cfg = compose("train", [f"debug={name}"], output_dir=tmp_path)
        assert cfg.trainer.enable_checkpointing is False, name
        assert cfg.callbacks.model_checkpoint is None, name


def test_profiler_debug_prints_the_slowest_actions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = compose("train", ["debug=profiler"], output_dir=tmp_path)
    assert cfg.trainer.detect_anomaly is False  # anomaly detection would distort the timings
    from imagelab.callbacks.profiling import PrintingSimpleProfiler

    profiler = PrintingSimpleProfiler(dirpath=tmp_path, filename="profile", max_rows=2)
    profiler.setup(stage="fit")
    for action, seconds in (("run_training_batch", [0.5, 0.7]), ("[Callback]X{'a': 1}.on_fit_start", [0.1]),
                            ("optimizer_step", [0.2, 0.2, 0.2])):  # fmt: skip
        profiler.recorded_durations[action] = list(seconds)
    profiler.describe()
    out = capsys.readouterr().out
    assert "profile of fit" in out and str(tmp_path / "fit-profile.txt") in out
    lines = [ln.split() for ln in out.splitlines()[2:]]
    assert [ln[0] for ln in lines] == ["run_training_batch", "optimizer_step"]  # the 2 slowest, slowest first
    assert lines[0][1:] == ["2", "0.6000", "1.200"]
    assert (tmp_path / "fit-profile.txt").is_file()
