"""Every fast-path switch composes and trains a few steps on CPU; what ``auto`` means on a GPU; LR scaling."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import DictConfig

from imagelab.core.errors import UserError
from tests.helpers.compose import compose
from tests.helpers.in_process import train_composed, train_in_process
from tests.helpers.overrides import FOUR_STEP_DENOISE
from tests.helpers.runs import psnr_gain

pytestmark = pytest.mark.usefixtures("restore_torch_flags")


def _train(tmp_path: Path, *overrides: str) -> dict:
    """Four training steps of the tiny denoiser with ``overrides``, in this process."""
    return train_in_process(tmp_path, *FOUR_STEP_DENOISE, *overrides)


def _switches(result: dict):
    from imagelab.callbacks.speed import SpeedSwitches

    found = [c for c in result["trainer"].callbacks if isinstance(c, SpeedSwitches)]
    assert len(found) == 1
    return found[0]


def test_default_switches_leave_a_cpu_run_unchanged(cfg_denoise: DictConfig) -> None:
    result = train_composed(cfg_denoise)
    assert _switches(result).resolved == {
        "device": "cpu",
        "channels_last": False,
        "cudnn_benchmark": False,
        "matmul_precision": "highest",
        "compile": False,
    }
    assert psnr_gain(result["metrics"]) > 0.1  # 4 steps from the identity: ~0.2 dB better than the input
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["speed.channels_last=true"], "channels_last"),
        (["speed.cudnn_benchmark=true"], "cudnn_benchmark"),
        (["speed.matmul_precision=medium"], "matmul_precision"),
        (["speed=compile", "speed.compile_backend=aot_eager"], "compile"),
        (["trainer.precision=bf16-mixed"], "bf16"),
        (["speed=off", "trainer.precision=32-true"], "off"),
        (["data.num_workers=1", "data.persistent_workers=true", "data.prefetch_factor=3"], "workers"),
    ],
)
def test_each_switch_trains_and_denoises_on_cpu(tmp_path: Path, overrides: list[str], check: str) -> None:
    result = _train(tmp_path, *overrides)
    trainer, module = result["trainer"], result["trainer"].lightning_module
    resolved = _switches(result).resolved
    assert trainer.global_step == 4 and psnr_gain(result["metrics"]) > 0.1
    weight = next(p for p in module.net.parameters() if p.ndim == 4 and p.shape[1] > 1)
    if check == "channels_last":
        assert resolved["channels_last"] and weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.is_contiguous()
    else:
        assert weight.is_contiguous()
    if check == "cudnn_benchmark":
        assert resolved["cudnn_benchmark"] and torch.backends.cudnn.benchmark
    if check == "matmul_precision":
        assert torch.get_float32_matmul_precision() == "medium"
    if check == "compile":
        assert resolved["compiled"] == "DnCNN"
        assert module.net._compiled_call_impl is not None
        # parameter names unchanged: checkpoints of compiled runs load into plain modules
        assert all("_orig_mod" not in key for key in module.state_dict())
    if check == "bf16":
        assert trainer.precision == "bf16-mixed"
    if check == "off":
        assert not resolved["channels_last"] and not resolved["cudnn_benchmark"]
        assert resolved["matmul_precision"] == "highest" and not torch.backends.cudnn.benchmark
    if check == "workers":
        loader = trainer.datamodule.train_dataloader()
        assert loader.num_workers == 1 and loader.persistent_workers and loader.prefetch_factor == 3


def test_fp16_mixed_precision_runs_on_cpu_as_bf16(tmp_path: Path) -> None:
    # float16 autocast is a GPU feature: on CPU Lightning runs 16-mixed as bf16-mixed (same code path)
    result = _train(tmp_path, "trainer.precision=16-mixed")
    assert result["trainer"].precision in ("16-mixed", "bf16-mixed") and result["trainer"].global_step == 4


def test_auto_means_on_for_cuda_conv_nets_and_respects_determinism() -> None:
    from imagelab.callbacks.speed import SpeedSwitches

    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    switches = SpeedSwitches()
    assert switches.resolve(cuda, conv) == {
        "device": "cuda",
        "channels_last": True,
        "cudnn_benchmark": True,
        "matmul_precision": "high",
        "compile": False,
    }
    assert switches.resolve(cuda, mlp)["channels_last"] is False
    assert switches.resolve(cpu, conv)["channels_last"] is False
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert switches.resolve(cuda, conv)["cudnn_benchmark"] is False  # trainer.deterministic=true wins
    finally:
        torch.use_deterministic_algorithms(deterministic)
    explicit = SpeedSwitches(channels_last=False, cudnn_benchmark=False, matmul_precision="highest")
    assert explicit.resolve(cuda, conv)["channels_last"] is False
    assert explicit.resolve(cuda, conv)["matmul_precision"] == "highest"


def _fake_trainer_on(device: str) -> SimpleNamespace:
    """What the loaders ask a Trainer: its device, rank and world size."""
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1
    )


def test_pinned_memory_auto_follows_the_trainers_device() -> None:
    from datamodules.loaders import resolve_pin_memory

    on, off = _fake_trainer_on("cuda"), _fake_trainer_on("cpu")
    assert resolve_pin_memory("auto", on) is True
    assert resolve_pin_memory("auto", off) is False
    assert resolve_pin_memory(False, on) is False
    assert resolve_pin_memory(True, off) is True
    assert resolve_pin_memory("auto", None) is torch.cuda.is_available()


def test_loader_switches_reach_the_data_loaders() -> None:
    from torch.utils.data import TensorDataset

    from datamodules.denoising import DenoisingDataModule
    from datamodules.loaders import build_loader

    data = TensorDataset(torch.zeros(4, 1))
    options = {"persistent_workers": True, "prefetch_factor": 3}
    pinned = build_loader(
        data, 2, trainer=_fake_trainer_on("cuda"), num_workers=0, pin_memory="auto", **options
    )
    # without worker processes there is nothing to keep alive or prefetch: both are dropped
    assert pinned.pin_memory is True and not pinned.persistent_workers and pinned.prefetch_factor is None
    workers = build_loader(
        data, 2, trainer=_fake_trainer_on("cpu"), num_workers=2, pin_memory="auto", **options
    )
    assert workers.pin_memory is False and workers.persistent_workers and workers.prefetch_factor == 3
    # a data module hands its options and its trainer's device to every loader it builds
    dm = DenoisingDataModule(
        source={"_target_": "datamodules.clean_sources.SkimagePhotos",
                "images": {"train": ["camera"], "val": ["moon"], "test": ["coins"]}},
        patch_size=16, patches_per_epoch=8, batch_size=4, eval_crop=32, pin_memory="auto",
    )  # fmt: skip
    dm.trainer = _fake_trainer_on("cuda")  # type: ignore[assignment]
    dm.setup("fit")
    assert dm.train_dataloader().pin_memory is True and dm.val_dataloader().pin_memory is True
    dm.trainer = _fake_trainer_on("cpu")  # type: ignore[assignment]
    assert dm.train_dataloader().pin_memory is False


def test_bad_switch_values_are_user_errors() -> None:
    from datamodules.denoising import DenoisingDataModule
    from imagelab.callbacks.speed import SpeedSwitches

    with pytest.raises(UserError, match="channels_last must be true, false or auto"):
        SpeedSwitches(channels_last="yes")
    with pytest.raises(UserError, match="matmul_precision"):
        SpeedSwitches(matmul_precision="tf32")
    with pytest.raises(UserError, match="compile_mode"):
        SpeedSwitches(compile_mode="fast")
    with pytest.raises(UserError, match="pin_memory"):
        DenoisingDataModule(pin_memory="yes")
    with pytest.raises(UserError, match="prefetch_factor"):
        DenoisingDataModule(prefetch_factor=0)


def test_speed_options_compose(tmp_path: Path) -> None:
    for option, compile_on in (("default", False), ("off", False), ("compile", True)):
        cfg = compose("train", [f"speed={option}"], output_dir=tmp_path)
        assert cfg.speed._target_ == "imagelab.callbacks.speed.SpeedSwitches"
        assert cfg.speed.compile is compile_on
    multinode = compose("train", ["trainer=ddp_multinode"], output_dir=tmp_path).trainer
    assert multinode.strategy == "ddp" and multinode.num_nodes == 2


# --------------------------------------------------------------------------------------------- LR scaling


def _fake_trainer(world: int, accumulate: int, batch_size: int, lr: float = 0.1):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return SimpleNamespace(
        datamodule=SimpleNamespace(batch_size=batch_size),
        world_size=world,
        accumulate_grad_batches=accumulate,
        optimizers=[optimizer],
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
        is_global_zero=True,
        loggers=[],
    )


@pytest.mark.parametrize(
    ("rule", "base", "expected"),
    [("linear", None, 8.0), ("sqrt", None, 8.0**0.5), ("linear", 64, 1.0), ("none", None, 1.0)],
)
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_lr_scaling_rules(rule: str, base: int | None, expected: float) -> None:
    from imagelab.callbacks.lr_scaling import LRScaling

    trainer = _fake_trainer(world=4, accumulate=2, batch_size=8)  # global batch 64
    callback = LRScaling(rule, base)
    callback.on_fit_start(trainer, None)  # type: ignore[arg-type]
    group = trainer.optimizers[0].param_groups[0]
    assert callback.global_batch == 64 and callback.factor == pytest.approx(expected)
    assert group["lr"] == pytest.approx(0.1 * expected)
    assert group["initial_lr"] == pytest.approx(0.1 * expected)
    trainer.lr_scheduler_configs[0].scheduler.step()  # the schedule keeps the scaled base
    assert group["lr"] == pytest.approx(0.1 * expected)


def test_lr_scaling_in_a_run_and_errors(cfg_denoise: DictConfig) -> None:
    from imagelab.callbacks.lr_scaling import LRScaling

    cfg_denoise.lr_scaling.rule, cfg_denoise.lr_scaling.base_batch_size = "linear", 4
    result = train_composed(cfg_denoise)
    found = [c for c in result["trainer"].callbacks if isinstance(c, LRScaling)]
    assert len(found) == 1 and found[0].factor == 2.0  # batch 8 on 1 device vs base 4
    assert result["trainer"].optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(2e-3)
    with pytest.raises(UserError, match="valid rules"):
        LRScaling("cubic")
    with pytest.raises(UserError, match="base_batch_size"):
        LRScaling("linear", 0)


def test_timed_progress_bar_skips_redraws_between_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    from imagelab.callbacks.progress import TimedRichProgressBar

    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, t, m, o, b, i: drawn.append(i))
    bar = TimedRichProgressBar(min_interval_s=60.0)
    bar._trainer = SimpleNamespace(num_training_batches=5, max_epochs=1, max_steps=-1)  # type: ignore[assignment]
    for i in range(5):
        bar.on_train_batch_end(None, None, None, None, i)
    assert drawn == [0, 4]  # the first batch, then nothing for 60 s except the epoch's last batch
    every = TimedRichProgressBar(min_interval_s=0.0)
    every._trainer = SimpleNamespace(num_training_batches=5, max_epochs=1, max_steps=-1)  # type: ignore[assignment]
    drawn.clear()
    for i in range(5):
        every.on_train_batch_end(None, None, None, None, i)
    assert drawn == [0, 1, 2, 3, 4]
    with pytest.raises(UserError, match="min_interval_s"):
        TimedRichProgressBar(min_interval_s=-1)
