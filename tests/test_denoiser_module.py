"""DenoiserModule: a short fit beats the noisy input, metrics/panels are logged, checkpoints round-trip."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from skimage import data
from torch.utils.data import DataLoader, TensorDataset

from imagelab.core.errors import UserError
from lightning_modules import denoiser as denoiser_module
from lightning_modules.denoiser import DenoiserModule

SIGMA = 25 / 255
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
ADAM = {"_target_": "lightning_modules.optim.create_optimizer", "_partial_": True, "opt": "adam"}
COSINE = {"_target_": "lightning_modules.optim.warmup_cosine", "_partial_": True}
METRICS = [
    "train/loss",
    "val/loss",
    "val/psnr",
    "val/ssim",
    "val/psnr_noisy",
    "val/psnr_best",
    "test/loss",
    "test/psnr",
    "test/ssim",
    "test/psnr_noisy",
]


class CameraPatches(pl.LightningDataModule):
    """Noisy/clean patches of skimage's camera image: train from the top, val/test from the bottom."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        image = torch.from_numpy(data.camera().astype(np.float32) / 255.0)[None].repeat(channels, 1, 1)

        def crops(n: int, size: int, rows: tuple[int, int]) -> torch.Tensor:
            ys = torch.randint(rows[0], rows[1] - size, (n,), generator=g).tolist()
            xs = torch.randint(0, 512 - size, (n,), generator=g).tolist()
            return torch.stack([image[:, y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])

        self.train_clean = crops(512, 32, (0, 320))
        self.train_noisy = self.train_clean + SIGMA * torch.randn(self.train_clean.shape, generator=g)
        self.val_clean = crops(6, 48, (320, 512))
        self.val_noisy = self.val_clean + SIGMA * torch.randn(self.val_clean.shape, generator=g)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.train_noisy, self.train_clean), batch_size=16, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_noisy, self.val_clean), batch_size=4)

    test_dataloader = val_dataloader


class LearningRates(pl.Callback):
    """Record the learning rate used at every training step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.values.append(trainer.optimizers[0].param_groups[0]["lr"])


def _trainer(**kwargs: object) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def panel_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record the denoiser's calls to ``log_image_panels`` (imagelab.tracking.image_logging)."""
    calls: list[dict] = []

    def fake(trainer: object, key: str, images: list, captions: list | None = None) -> None:
        calls.append({"key": key, "images": images, "captions": captions, "step": trainer.global_step})

    monkeypatch.setattr(denoiser_module, "log_image_panels", fake)
    return calls


@pytest.mark.slow
def test_fit_beats_noisy_input_logs_everything_and_checkpoint_round_trips(
    tmp_path: Path, panel_calls: list[dict]
) -> None:
    torch.manual_seed(0)
    # omegaconf containers, as Hydra passes them: they must be stored as plain Python in the checkpoint
    model = DenoiserModule(
        net=OmegaConf.create(
            {"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 5, "width": 16}
        ),
        optimizer=OmegaConf.create({**ADAM, "lr": 2e-3}),
        scheduler=OmegaConf.create({**COSINE, "warmup_epochs": 0.5, "min_lr_ratio": 0.1}),
        num_panels=3,
    )
    dm = CameraPatches()
    lrs = LearningRates()
    # epochs of 30 batches: validation at steps 30 and 60
    trainer = _trainer(max_steps=60, limit_train_batches=30, num_sanity_val_steps=1, callbacks=[lrs])
    trainer.fit(model, dm)

    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert len(lrs.values) == 60
    assert lrs.values.index(max(lrs.values)) == 14  # warm-up of half an epoch = 15 steps
    assert max(lrs.values) == pytest.approx(2e-3)
    assert lrs.values[-1] < 2e-3 * 0.15  # cosine decayed towards min_lr_ratio * lr
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # the network starts as the identity (psnr == psnr_noisy): training must clearly improve on that
    assert metrics["val/psnr"] > metrics["val/psnr_noisy"] + 2.0, metrics
    assert metrics["val/psnr_best"] >= metrics["val/psnr"]
    assert 18.0 < metrics["val/psnr_noisy"] < 23.0  # sigma 25 on [0, 1] images

    # panels: one call per real validation epoch (not the sanity check), num_panels uint8 HxWx3 images
    assert len(panel_calls) == 2 and [c["step"] for c in panel_calls] == [30, 60]
    call = panel_calls[-1]
    assert call["key"] == "val/panels" and len(call["images"]) == 3 and len(call["captions"]) == 3
    panel = call["images"][0]
    assert panel.dtype == np.uint8 and panel.shape == (48, 3 * 48 + 2 * 4, 3)
    noisy_u8 = (dm.val_noisy[0, 0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    clean_u8 = (dm.val_clean[0, 0] * 255 + 0.5).to(torch.uint8).numpy()
    np.testing.assert_array_equal(panel[:, :48, 0], noisy_u8)
    np.testing.assert_array_equal(panel[:, -48:, 1], clean_u8)
    assert "dB" in call["captions"][0]

    assert {m for m in METRICS if m.startswith(("train/", "val/"))} <= set(metrics)
    trainer.validate(model, dm, verbose=False)
    assert {m for m in METRICS if m.startswith("val/")} <= set(trainer.callback_metrics)
    assert float(trainer.callback_metrics["val/psnr"]) == pytest.approx(metrics["val/psnr"])  # same weights
    trainer.test(model, dm, verbose=False)
    assert {m for m in METRICS if m.startswith("test/")} <= set(trainer.callback_metrics)
    assert (
        float(trainer.callback_metrics["test/psnr"]) > float(trainer.callback_metrics["test/psnr_noisy"]) + 2
    )

    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert raw["hyper_parameters"]["net"] == {
        "_target_": "lightning_modules.networks.dncnn.DnCNN",
        "channels": 1,
        "depth": 5,
        "width": 16,
    }
    assert type(raw["hyper_parameters"]["scheduler"]) is dict
    restored = DenoiserModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    model.eval()
    x = dm.val_noisy[:2]
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    assert float(restored.val_psnr_best.max_value) == pytest.approx(metrics["val/psnr_best"])


def test_predict_and_denoise_clamp_to_unit_range() -> None:
    torch.manual_seed(0)
    model = DenoiserModule(
        net={"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 3, "depth": 3, "width": 8}
    ).eval()
    torch.nn.init.normal_(model.net.last_conv.weight, std=1.0)
    x = torch.rand(2, 3, 20, 24)
    raw = model(x)
    assert raw.min() < 0 or raw.max() > 1  # so the clamp below is actually exercised
    out = model.predict_step((x, x), 0)
    torch.testing.assert_close(out, raw.clamp(0, 1))
    torch.testing.assert_close(model.predict_step(x, 0), out)
    single = model.denoise(x[0])
    assert single.shape == (3, 20, 24) and not single.requires_grad
    torch.testing.assert_close(single, out[0])


def test_wrong_channel_count_is_a_user_error() -> None:
    model = DenoiserModule(
        net={"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 3, "width": 4}
    )
    with pytest.raises(UserError, match="channels=1"):
        model(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": {"_target_": "torch.nn.HuberLos"}},
        {"loss": "mse"},
        {"optimizer": {**ADAM, "opt": "adamm"}},
        {"optimizer": {**ADAM, "betaz": [0.9, 0.99]}},
        {"optimizer": {"name": "adam", "lr": 1e-3}},
        {"scheduler": {**COSINE, "warmup": 3}},
        {"scheduler": {**COSINE, "min_lr_ratio": 2}},
        {"net": {"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "layers": 3}},
    ],
)
def test_bad_configs_fail_at_construction(kwargs: dict) -> None:
    args = {
        "net": {"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 3, "width": 4},
        **kwargs,
    }
    with pytest.raises(UserError):
        DenoiserModule(**args)


@pytest.mark.parametrize(
    "config",
    sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if not p.stem.startswith("classifier")),
)
@pytest.mark.parametrize("channels", [1, 3])
def test_model_configs_instantiate(config: str, channels: int) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR / "model"), version_base="1.3"):
        cfg = compose(config_name=config)
    cfg = OmegaConf.merge({"data": {"channels": channels}}, {"model": cfg})
    model = instantiate(cfg.model)
    assert isinstance(model, DenoiserModule) and model.default_objective == ("val/psnr", "max")
    assert model.hparams["net"]["channels"] == channels
    with torch.no_grad():
        assert model.eval()(torch.rand(1, channels, 37, 45)).shape == (1, channels, 37, 45)


def test_val_metrics_are_float32_under_mixed_precision() -> None:
    """Under bf16 autocast (trainer.precision=bf16-mixed) SSIM is still computed in float32."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    torch.manual_seed(0)
    model = DenoiserModule(
        net={"_target_": "lightning_modules.networks.dncnn.DnCNN", "channels": 1, "depth": 3, "width": 8}
    )
    model.log_dict = lambda *args, **kwargs: None  # no trainer attached
    clean = torch.from_numpy(data.camera()[:96, :96].astype(np.float32) / 255.0)[None, None]
    noisy = clean + SIGMA * torch.randn_like(clean)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model._eval_step((noisy, clean), "val", model.val_psnr, model.val_ssim, model.val_psnr_noisy)
    exact = structural_similarity_index_measure(out, clean, data_range=1.0)
    assert float(model.val_ssim.compute()) == pytest.approx(float(exact), abs=1e-5)
