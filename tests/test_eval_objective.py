"""eval.py reports the run's objective on the test split with the objective's own direction (min or max)."""

from __future__ import annotations

from omegaconf import OmegaConf

from imagelab.tasks.evaluation import _test_objective


class _Model:
    default_objective = ("val/psnr", "max")


def test_the_objective_keeps_its_mode_on_the_test_split() -> None:
    run_cfg = OmegaConf.create({"objective": {"metric": "val/loss", "mode": "min"}})
    assert _test_objective(run_cfg, _Model(), {"test/loss": 0.1, "test/psnr": 30.0}) == ("test/loss", "min")


def test_auto_or_an_unmeasured_objective_is_the_models_default() -> None:
    metrics = {"test/psnr": 30.0}
    auto = OmegaConf.create({"objective": {"metric": "auto", "mode": "auto"}})
    assert _test_objective(auto, _Model(), metrics) == ("test/psnr", "max")
    other = OmegaConf.create({"objective": {"metric": "val/lpips", "mode": "min"}})
    assert _test_objective(other, _Model(), metrics) == ("test/psnr", "max")
