"""The eval task: rebuild data and model from a checkpoint alone, test, and compare with baselines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imagelab.config.instantiation import instantiate_node
from imagelab.config.objective import resolve_objective
from imagelab.core.constants import RUN_CONFIG_KEY
from imagelab.core.errors import UserError
from imagelab.tracking.console import quiet_lightning_handlers
from imagelab.tracking.loggers import instantiate_loggers

# torch, torchmetrics, Lightning, W&B and the project's models are imported inside the functions that use
# them: scripts/eval.py imports this module before run_task checks the config (a mistyped value costs a
# second, not the heavy imports' start-up).

log = logging.getLogger(__name__)


def _known_sigma(datamodule: Any) -> float | None:
    """σ on the [0, 1] scale when the test noise is Gaussian with a fixed σ, else None (baselines estimate it)."""
    noise = getattr(datamodule, "eval_noise", None)
    return noise.known_sigma() if noise is not None else None


def score_baselines(datamodule: Any, names: list[str], sigma: float | None) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of each classical denoiser in ``names`` on the datamodule's (noisy, clean) test images."""
    import numpy as np
    import torch  # lazy, like the rest of this function's imports: see the note at the top
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

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
    width = max(22, *(len(name) + 2 for name, _, _ in rows))  # long labels keep the columns aligned
    print(f"{'method':<{width}}{'PSNR (dB)':>10}{'SSIM':>9}")
    for name, psnr, ssim in rows:
        psnr_s = f"{psnr:10.2f}" if psnr is not None else f"{'-':>10}"
        ssim_s = f"{ssim:9.4f}" if ssim is not None else f"{'-':>9}"
        print(f"{name:<{width}}{psnr_s}{ssim_s}")


def _robust_attacks(attack_cfg: Any, kind: str) -> dict[str, dict[str, Any]]:
    """The attacks of ``attack=fgsm|pgd``: FGSM with the same eps/norm, plus the PGD when asked for."""
    if not attack_cfg:
        return {}
    from lightning_modules.adversarial import Attack  # lazy: imports Lightning (see the note at the top)

    if kind != "classifier":
        raise UserError(f"attack=... evaluates classifiers; this checkpoint is a {kind}")
    chosen = Attack.from_config(attack_cfg)  # validates the options
    attacks = {"fgsm": {"name": "fgsm", "eps": chosen.eps, "norm": chosen.norm, "random_start": False}}
    if chosen.name == "pgd":
        attacks["pgd"] = {
            k: getattr(chosen, k) for k in ("name", "eps", "alpha", "steps", "random_start", "norm")
        }
    return attacks


def _test_metrics(trainer: Any, module: Any, datamodule: Any, verbose: bool = True) -> dict[str, float]:
    """``trainer.test`` of ``module``; its scalar ``test/*`` metrics."""
    trainer.test(model=module, datamodule=datamodule, verbose=verbose)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def _test_objective(run_cfg: DictConfig, module: Any, metrics: dict[str, float]) -> tuple[str, str]:
    """(metric, mode) of the run's objective on the test split: ``val/x`` becomes ``test/x``.

    ``auto`` (or an objective the test does not measure) is the model's ``default_objective``.
    """
    objective = OmegaConf.create({"objective": run_cfg.get("objective") or {}})
    metric, mode = resolve_objective(objective, module)
    metric = metric.replace("val/", "test/", 1)
    if metric not in metrics:
        metric, mode = resolve_objective(OmegaConf.create({}), module)
        metric = metric.replace("val/", "test/", 1)
    return metric, mode


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on the test split its run config describes (plus ``cfg.data`` overrides).

    ``ckpt_path`` may list several checkpoints (an ensemble, ``imagelab/tasks/ensemble.py``): each member
    is scored, then their average. ``tta=flip|x8`` scores the model (or ensemble) without and with test-time
    augmentation (``lightning_modules/tta.py``). The last, complete combination gives the ``test/*`` metrics.
    """
    import lightning.pytorch as pl  # lazy, like the rest of this function's imports: see the note at the top

    from imagelab.tasks.ensemble import combine, load_members
    from imagelab.tracking.wandb_run import WandbRunSetup
    from imagelab.tracking.wandb_tables import PerImageTable
    from lightning_modules.adversarial import Attack, RobustAccuracy
    from lightning_modules.tta import transforms_of, wrap_tta

    quiet_lightning_handlers()  # Lightning's own console handler would print each of its lines twice

    tta = str(cfg.get("tta") or "none")
    transforms_of(tta)  # a bad mode fails before anything is loaded
    members, kind = load_members(cfg.ckpt_path)
    run_cfg = members[0].run_cfg
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    data_cfg = OmegaConf.merge(run_cfg.data, cfg.get("data") or {})
    datamodule = instantiate_node(data_cfg, "data")
    attacks = _robust_attacks(cfg.get("attack"), kind)
    loggers = instantiate_loggers(cfg.get("logger"))

    callbacks: list[Any] = [WandbRunSetup(), PerImageTable()]  # W&B summaries and the per-image table
    if attacks:
        callbacks.append(RobustAccuracy(attacks, splits=("test",)))
    trainer: pl.Trainer = instantiate_node(
        cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks
    )
    for logger in loggers:
        logger.log_hyperparams(
            {
                "ckpt_path": [m.path for m in members] if len(members) > 1 else members[0].path,
                "tta": tta,
                RUN_CONFIG_KEY: OmegaConf.to_container(run_cfg),
            }
        )
    # members and intermediate combinations are scored by a trainer that logs nothing
    quiet = None
    if len(members) > 1 or tta != "none":
        quiet = instantiate_node(
            cfg.trainer,
            "trainer",
            logger=False,
            callbacks=[],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    rows: list[tuple[str, dict[str, float]]] = []
    extra: dict[str, float] = {}
    if len(members) > 1:
        for i, member in enumerate(members):
            scores = _test_metrics(quiet, member.module, datamodule, verbose=False)
            rows.append(
                (f"member {i}: {Path(member.path).parent.parent.name}/{Path(member.path).name}", scores)
            )
            extra.update({f"member{i}/{k}": v for k, v in scores.items()})
    name = f"ensemble of {len(members)}" if len(members) > 1 else "model"
    model = combine(members, kind)
    if tta != "none":
        scores = _test_metrics(quiet, model, datamodule, verbose=False)
        rows.append((name, scores))
        extra.update({f"no_tta/{k}": v for k, v in scores.items()})
        model = wrap_tta(model, tta, kind)
        name = f"{name} + tta {tta}"
    metrics = _test_metrics(trainer, model, datamodule, verbose=False)  # the task prints the results
    rows.append((name, metrics))

    objective_metric, objective_mode = _test_objective(run_cfg, members[0].module, metrics)
    printed: list[str] = []
    if kind == "denoiser" and trainer.is_global_zero:
        baselines = score_baselines(
            datamodule,
            list(cfg.get("baselines") or []),
            _known_sigma(datamodule),
        )
        net_name = str(run_cfg.model.get("net", {}).get("_target_", "model")).rsplit(".", 1)[-1]  # class name
        from lightning_modules.classical_denoisers import below_reference  # lazy: see the note at the top

        table = [
            ("noisy input", metrics.get("test/psnr_noisy"), None),
            *[(f"baseline: {name}", s["psnr"], s["ssim"]) for name, s in baselines.items()],
            *[
                (
                    f"{label if label != 'model' else 'model: ' + net_name}"
                    + below_reference(s.get("test/psnr"), baselines),  # a result that loses to BM3D says so
                    s.get("test/psnr"),
                    s.get("test/ssim"),
                )
                for label, s in rows
            ],
        ]
        _print_table(table)
        printed = ["test/psnr", "test/ssim", "test/psnr_noisy"]  # the results table at the end skips them
        for name, scores in baselines.items():
            metrics.update({f"baseline/{name}/psnr": scores["psnr"], f"baseline/{name}/ssim": scores["ssim"]})
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("baseline/")})
    elif attacks and trainer.is_global_zero:
        print(f"{'test accuracy of ' + name:<48}{'accuracy':>10}")
        print(f"{'clean':<48}{metrics.get('test/acc', float('nan')):10.4f}")
        for key, attack in attacks.items():
            label = Attack.from_config(attack).label
            print(f"{label:<48}{metrics.get(f'test/acc_{key}', float('nan')):10.4f}")
    if kind != "denoiser" and len(rows) > 1 and trainer.is_global_zero:
        print(f"{'model':<40}{'accuracy':>10}{'loss':>10}")
        for label, s in rows:
            print(
                f"{label:<40}{s.get('test/acc', float('nan')):10.4f}{s.get('test/loss', float('nan')):10.4f}"
            )
    if extra:
        for logger in loggers:
            logger.log_metrics(extra)
    return {
        "loggers": loggers,
        "objective": {
            "metric": objective_metric,
            "mode": objective_mode,
            "best": metrics.get(objective_metric),
        },
        "metrics": dict(sorted({**metrics, **extra}.items())),
        "is_global_zero": trainer.is_global_zero,
        "printed_metrics": printed,
    }
