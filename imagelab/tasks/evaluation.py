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


def _robust_attacks(attack_cfg: Any, kind: Any) -> dict[str, Any]:
    """The attacks of ``attack=fgsm|pgd``: FGSM with the same eps/norm, plus the chosen one when it is not it."""
    if not attack_cfg:
        return {}
    # lazy: imports Lightning (see the note at the top)
    from lightning_modules.adversarial import FGSM, Attack

    if not kind.attacks:
        raise UserError(f"attack=... evaluates classifiers; this checkpoint is a {kind.name}")
    chosen = Attack.from_config(attack_cfg)  # validates the options
    attacks: dict[str, Attack] = {"fgsm": FGSM(eps=chosen.eps, norm=chosen.norm, random_start=False)}
    attacks.setdefault(chosen.key, chosen)
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


def _trainers(cfg: DictConfig, loggers: list[Any], attacks: dict[str, Any], quiet: bool) -> tuple[Any, Any]:
    """The trainer of the final score (logging, W&B tables, robust accuracy) and, when ``quiet``, one that
    logs nothing for ensemble members and intermediate combinations (else None)."""
    from imagelab.tracking.wandb_run import WandbRunSetup  # lazy: see the note at the top
    from imagelab.tracking.wandb_tables import PerImageTable
    from lightning_modules.adversarial import RobustAccuracy

    callbacks: list[Any] = [WandbRunSetup(), PerImageTable()]  # W&B summaries and the per-image table
    if attacks:
        callbacks.append(RobustAccuracy(attacks, splits=("test",)))
    trainer = instantiate_node(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks)
    if not quiet:
        return trainer, None
    silent = dict(logger=False, callbacks=[], enable_progress_bar=False, enable_model_summary=False)
    return trainer, instantiate_node(cfg.trainer, "trainer", **silent)


def _member_label(i: int, path: str) -> str:
    """``member i: <run dir>/<file>``."""
    return f"member {i}: {Path(path).parent.parent.name}/{Path(path).name}"


def _score_all(
    members: list[Any], kind: Any, tta: str, datamodule: Any, trainer: Any, quiet: Any
) -> tuple[list[tuple[str, dict[str, float]]], dict[str, float]]:
    """Score each member (of an ensemble), the model without TTA (when ``tta``) and the final model.

    Returns the rows (label, test metrics; the final model last) and the extra metrics to log
    (``member<i>/...``, ``no_tta/...``).
    """
    from imagelab.tasks.ensemble import combine  # lazy: imports the models (see the note at the top)

    rows: list[tuple[str, dict[str, float]]] = []
    extra: dict[str, float] = {}
    if len(members) > 1:
        for i, member in enumerate(members):
            scores = _test_metrics(quiet, member.module, datamodule, verbose=False)
            rows.append((_member_label(i, member.path), scores))
            extra.update({f"member{i}/{k}": v for k, v in scores.items()})
    name = f"ensemble of {len(members)}" if len(members) > 1 else "model"
    model = combine(members, kind)
    if tta != "none":
        scores = _test_metrics(quiet, model, datamodule, verbose=False)
        rows.append((name, scores))
        extra.update({f"no_tta/{k}": v for k, v in scores.items()})
        model, name = combine(members, kind, tta), f"{name} + tta {tta}"
    rows.append((name, _test_metrics(trainer, model, datamodule, verbose=False)))  # the task prints results
    return rows, extra


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on the test split its run config describes (plus ``cfg.data`` overrides).

    ``ckpt_path`` may list several checkpoints (an ensemble, ``imagelab/tasks/ensemble.py``): each member
    is scored, then their average. ``tta=flip|x8`` scores the model (or ensemble) without and with test-time
    augmentation (``lightning_modules/tta.py``). The last, complete combination gives the ``test/*`` metrics;
    the checkpoint's task kind prints its report (``imagelab.kinds``).
    """
    import lightning.pytorch as pl  # lazy, like the rest of this function's imports: see the note at the top

    from imagelab.kinds import EvalResults
    from imagelab.tasks.ensemble import load_members
    from lightning_modules.tta import transforms_of

    quiet_lightning_handlers()  # Lightning's own console handler would print each of its lines twice
    tta = str(cfg.get("tta") or "none")
    transforms_of(tta)  # a bad mode fails before anything is loaded
    members, kind = load_members(cfg.ckpt_path)
    run_cfg = members[0].run_cfg
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_node(OmegaConf.merge(run_cfg.data, cfg.get("data") or {}), "data")
    attacks = _robust_attacks(cfg.get("attack"), kind)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer, quiet = _trainers(cfg, loggers, attacks, quiet=len(members) > 1 or tta != "none")
    paths = [m.path for m in members]
    hparams = {"ckpt_path": paths if len(paths) > 1 else paths[0], "tta": tta}
    for logger in loggers:
        logger.log_hyperparams({**hparams, RUN_CONFIG_KEY: OmegaConf.to_container(run_cfg)})
    rows, extra = _score_all(members, kind, tta, datamodule, trainer, quiet)
    metrics = rows[-1][1]
    objective_metric, objective_mode = _test_objective(run_cfg, members[0].module, metrics)
    printed: list[str] = []
    if trainer.is_global_zero:
        results = EvalResults(cfg, run_cfg, datamodule, rows, metrics, loggers, attacks)
        printed = kind.eval_report(results)
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
