"""The training run's callback list (imagelab.tasks.callback_assembly), rank-zero console lines, classifier options."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

CLASSIFIER_OPTION_NAMES = [
    "backbone",
    "pretrained",
    "checkpoint_path",
    "num_classes",
    "class_names",
    "in_chans",
    "drop_rate",
    "drop_path_rate",
    "timm_kwargs",
    "finetune",
    "optimizer",
    "scheduler",
    "label_smoothing",
    "num_misclassified",
    "per_class_max",
    "preprocess",
]


def _cfg(rule: str = "linear") -> object:
    return OmegaConf.create(
        {
            "callbacks": {
                "lr_monitor": {"_target_": "imagelab.callbacks.lr_monitor.LearningRateMonitor"},
                "profiler_free": None,  # entries set to null are skipped
                "summary": {"_target_": "imagelab.callbacks.model_summary.ParameterSummary"},
            },
            "speed": {"_target_": "imagelab.callbacks.speed.SpeedSwitches"},
            "lr_scaling": {"rule": rule, "base_batch_size": None},
            "distill": {"_target_": "lightning_modules.distillation.Distillation", "teacher": None},
        }
    )


def _names(callbacks: list) -> list[str]:
    return [type(c).__name__ for c in callbacks]


def test_callbacks_come_in_the_documented_order() -> None:
    from lightning.pytorch.loggers import CSVLogger

    from imagelab.tasks.callback_assembly import run_callbacks, with_loggers

    built = run_callbacks(_cfg(), {"model": {}})
    assert _names(built) == [
        "LearningRateMonitor",
        "ParameterSummary",
        "RunConfigInCheckpoint",
        "ParameterCountLogger",
        "GracefulInterrupt",
        "SkipNoOpStepHooks",
        "RankLifeline",
        "SpeedSwitches",
        "LRScaling",
    ]
    logger = CSVLogger("unused")
    final = with_loggers(built, [logger], {"model": {}, "seed": None})
    assert _names(final) == ["AttachLoggersAfterDataSetup", *_names(built)]
    attach = final[0]
    assert attach.loggers == [logger]
    assert "code" in attach.hyperparameters and "seed" not in attach.hyperparameters  # unfilled None dropped
    assert _names(run_callbacks(_cfg("none"), {}))[-1] == "SpeedSwitches"  # rule none: no LRScaling


def test_without_a_logger_the_lr_monitor_is_left_out() -> None:
    from imagelab.tasks.callback_assembly import run_callbacks, with_loggers

    final = with_loggers(run_callbacks(_cfg(), {}), [], {})
    assert "LearningRateMonitor" not in _names(final)
    assert _names(final)[:3] == ["AttachLoggersAfterDataSetup", "ParameterSummary", "RunConfigInCheckpoint"]


def test_console_lines_are_printed_by_rank_zero_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lightning_utilities.core.rank_zero import rank_zero_only

    from imagelab.tracking.console import say

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    say("from rank one")
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)
    say("first", "second")
    say("error: on stderr", err=True)
    out, err = capsys.readouterr()
    assert out == "first\nsecond\n" and err == "error: on stderr\n"


def test_classifier_hyperparameters_are_the_options_and_rebuild_the_module() -> None:
    from lightning_modules.classifier import ClassifierModule

    module = ClassifierModule(
        backbone="resnet18", class_names=["a", "b", 3], in_chans=3.0, num_misclassified=4
    )
    hparams = dict(module.hparams)
    assert list(hparams) == CLASSIFIER_OPTION_NAMES  # a checkpoint's hyper_parameters keys, in this order
    assert hparams["class_names"] == ["a", "b", "3"] and hparams["num_classes"] == 3
    assert hparams["in_chans"] == 3 and isinstance(hparams["in_chans"], int)
    assert hparams["finetune"] == {"_target_": "lightning_modules.finetuning.Full"}
    assert hparams["optimizer"]["opt"] == "adamw" and hparams["timm_kwargs"] == {}
    assert dict(ClassifierModule(**hparams).hparams) == hparams  # what loading a checkpoint does
    with pytest.raises(TypeError, match="no_such_option"):
        ClassifierModule(backbone="resnet18", no_such_option=1)
