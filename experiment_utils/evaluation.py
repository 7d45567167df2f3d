"""The eval task: rebuild data and model from a checkpoint alone, test, and compare with baselines."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiment_utils.instantiation import instantiate_loggers, instantiate_node
from experiment_utils.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint, model_kind

log = logging.getLogger(__name__)


def _gaussian_sigma(noise_cfg: Any) -> float | None:
    """σ on the [0, 1] scale when the test noise is Gaussian with a fixed σ, else None (baselines estimate it)."""
    if not noise_cfg or noise_cfg.get("kind", "gaussian") != "gaussian" or noise_cfg.get("sigma_range"):
        return None
    sigma = noise_cfg.get("sigma")
    return float(sigma) / 255.0 if sigma is not None else None


def score_baselines(datamodule: Any, names: list[str], sigma: float | None) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of each classical denoiser in ``names`` on the datamodule's (noisy, clean) test images."""
    import numpy as np
    import torch
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from experiment_utils.errors import UserError
    from lightning_modules.classical_denoisers import BASELINES

    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise UserError(f"unknown baselines {unknown}: choose from {sorted(BASELINES)}")
    metrics = {
        n: (
            PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            StructuralSimilarityIndexMeasure(data_range=1.0),
        )
        for n in names
    }
    for noisy, clean in datamodule.test_dataloader():
        for noisy_img, clean_img in zip(noisy, clean, strict=True):
            array = noisy_img.clamp(0, 1).permute(1, 2, 0).numpy()
            array = array[..., 0] if array.shape[-1] == 1 else array
            for name in names:
                out = np.asarray(BASELINES[name](array, sigma), dtype=np.float32)
                out_t = (
                    torch.from_numpy(out.reshape(array.shape)).reshape(*array.shape[:2], -1).permute(2, 0, 1)
                )
                psnr, ssim = metrics[name]
                psnr.update(out_t[None].clamp(0, 1), clean_img[None])
                ssim.update(out_t[None].clamp(0, 1), clean_img[None])
    return {n: {"psnr": float(p.compute()), "ssim": float(s.compute())} for n, (p, s) in metrics.items()}


def _print_table(rows: list[tuple[str, float | None, float | None]]) -> None:
    print(f"{'method':<22}{'PSNR (dB)':>10}{'SSIM':>9}")
    for name, psnr, ssim in rows:
        psnr_s = f"{psnr:10.2f}" if psnr is not None else f"{'-':>10}"
        ssim_s = f"{ssim:9.4f}" if ssim is not None else f"{'-':>9}"
        print(f"{name:<22}{psnr_s}{ssim_s}")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on the test split its run config describes (plus ``cfg.data`` overrides)."""
    import lightning.pytorch as pl

    checkpoint, run_cfg = load_run_checkpoint(cfg.ckpt_path)
    kind = model_kind(run_cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    data_cfg = OmegaConf.merge(run_cfg.data, cfg.get("data") or {})
    datamodule = instantiate_node(data_cfg, "data")
    model = build_module_from_checkpoint(checkpoint, run_cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    from experiment_utils.wandb_run import WandbRunSetup
    from experiment_utils.wandb_tables import PerImageTable

    callbacks = [WandbRunSetup(), PerImageTable()]  # W&B summaries and the per-image table (W&B only)
    trainer: pl.Trainer = instantiate_node(
        cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks
    )
    for logger in loggers:
        logger.log_hyperparams(
            {"ckpt_path": str(cfg.ckpt_path), "run_config": OmegaConf.to_container(run_cfg)}
        )
    trainer.test(model=model, datamodule=datamodule, verbose=False)  # the task prints the results
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}

    objective_metric = str(run_cfg.get("objective", {}).get("metric", "val/")).replace("val/", "test/", 1)
    if objective_metric not in metrics:
        objective_metric = "test/psnr" if kind == "denoiser" else "test/acc"
    if kind == "denoiser" and trainer.is_global_zero:
        baselines = score_baselines(
            datamodule,
            list(cfg.get("baselines") or []),
            _gaussian_sigma(data_cfg.get("eval_noise") or data_cfg.get("noise")),
        )
        rows = [
            ("noisy input", metrics.get("test/psnr_noisy"), None),
            *[(f"baseline: {name}", s["psnr"], s["ssim"]) for name, s in baselines.items()],
            (
                f"model: {run_cfg.model.get('net', {}).get('name', 'model')}",
                metrics.get("test/psnr"),
                metrics.get("test/ssim"),
            ),
        ]
        _print_table(rows)
        for name, scores in baselines.items():
            metrics.update({f"baseline/{name}/psnr": scores["psnr"], f"baseline/{name}/ssim": scores["ssim"]})
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("baseline/")})
    return {
        "loggers": loggers,
        "objective": {"metric": objective_metric, "mode": "max", "best": metrics.get(objective_metric)},
        "metrics": dict(sorted(metrics.items())),
        "is_global_zero": trainer.is_global_zero,
    }
