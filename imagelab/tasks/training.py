"""The train task: build data, model, callbacks, loggers and trainer from config; fit; test the best checkpoint."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from imagelab.config.instantiation import instantiate_node
from imagelab.config.objective import extra_objectives, resolve_objective
from imagelab.config.run_checkpoint import check_resumable_checkpoint
from imagelab.core.atomic import remove_stale_partials
from imagelab.core.distributed import env_rank
from imagelab.core.requeue import slurm_restart_count
from imagelab.core.torchrun_restart import torchrun_restarted
from imagelab.sweeps.optuna_search import check_sweeper_direction
from imagelab.tasks.callback_assembly import run_callbacks, with_loggers
from imagelab.tasks.ddp_launch import install_hydra_job_subprocess_cmd
from imagelab.tasks.resume import ResumePoint, resume_point
from imagelab.tracking.console import quiet_lightning_handlers
from imagelab.tracking.loggers import instantiate_loggers

# Lightning, torch and the modules built on them are imported inside train(): scripts/train.py imports this
# module before run_task checks the config, so a mistyped value is reported in a second, not after their
# start-up (tests/test_run_faults.py::test_the_config_is_checked_before_any_heavy_import).

log = logging.getLogger(__name__)


def _scalar_metrics(metrics: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefixes):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return dict(sorted(out.items()))


def _callback_metrics(callbacks: list[Any]) -> dict[str, float]:
    """Scalars that callbacks report for metrics.json (e.g. the Optuna trial number and pruning epoch)."""
    out: dict[str, float] = {}
    for callback in callbacks:
        if hasattr(callback, "result_metrics"):
            out.update(callback.result_metrics())
    return out


@contextlib.contextmanager
def _heap_frozen_while_fitting() -> Iterator[None]:
    """Keep the objects that exist before fitting (modules, config, model) out of the garbage collector.

    Data-loader workers are forked copies of this process. A garbage collection, in a worker or here, visits
    every tracked object and writes to its header, so each collection copies pages that the processes share
    (copy-on-write), over and over with persistent workers: about 0.1 s of CPU per epoch in the workers alone
    for the ResNet-18 digits job of docs/scaling.md. ``gc.freeze`` (Python's advice before forking) moves them
    to a generation that is never collected; afterwards they are collected as usual again. Nothing is freed
    differently by reference counting, so no number changes. A heap that the caller froze is left as it is.
    """
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()


def _data_and_model(cfg: DictConfig) -> tuple[Any, Any, tuple[str, str]]:
    """The run's datamodule, model and objective (metric, mode), checked against the sweeper's direction."""
    log.info("Instantiating data <%s>", cfg.data.get("_target_"))
    datamodule = instantiate_node(cfg.data, "data")
    log.info("Instantiating model <%s>", cfg.model.get("_target_"))
    model = instantiate_node(cfg.model, "model")
    metric, mode = resolve_objective(cfg, model)
    check_sweeper_direction(mode, [d for _, d in extra_objectives(cfg)])  # Optuna: the same way round
    return datamodule, model, (metric, mode)


def _resume(cfg: DictConfig, output_dir: Path) -> tuple[ResumePoint | None, str | None]:
    """Where fitting starts: the run's own checkpoint when resumed, requeued (SLURM) or restarted (torchrun),
    else ``cfg.ckpt_path``.

    A checkpoint to fit from is checked against the config first; temp files of a save that was killed
    half-way are removed.
    """
    restarted = slurm_restart_count() > 0 or torchrun_restarted(output_dir, env_rank())
    resumed = resume_point(cfg.get("resume"), output_dir, requeued=restarted)
    ckpt_path = str(resumed.checkpoint) if resumed else cfg.get("ckpt_path")
    if ckpt_path and cfg.get("train", True):
        import imagelab.kinds  # noqa: F401  (registers the built-in task kinds: the check names them)

        check_resumable_checkpoint(ckpt_path, cfg)
    remove_stale_partials(output_dir / "checkpoints")
    return resumed, ckpt_path


def _best_checkpoint(trainer: Any, fit_metrics: dict[str, float], metric: str) -> tuple[str | None, float]:
    """The best checkpoint's path and objective value (the last fitted value when nothing was checkpointed)."""
    checkpoint_cb = trainer.checkpoint_callback
    best_path = getattr(checkpoint_cb, "best_model_path", "") or None
    best_score = getattr(checkpoint_cb, "best_model_score", None)
    best_value = float(best_score) if best_score is not None else fit_metrics.get(metric, math.nan)
    return best_path, best_value


def _test(trainer: Any, model: Any, datamodule: Any, best_path: str | None) -> dict[str, float]:
    """Test the best checkpoint (the current weights when there is none); the ``test/`` scalars."""
    if best_path is None:
        log.warning("No best checkpoint (checkpointing off or not fitted): testing the current weights")
    trainer.test(
        model=model, datamodule=datamodule, ckpt_path=best_path, weights_only=True, verbose=False
    )  # verbose=False: the task prints the results once, at the end
    return _scalar_metrics(trainer.callback_metrics, ("test/",))


def _objective(
    cfg: DictConfig, metric: str, mode: str, best: float, final: dict[str, float]
) -> dict[str, Any]:
    """The objective's metric, mode and best value; with every objective's under a multi-objective search."""
    objective: dict[str, Any] = {"metric": metric, "mode": mode, "best": best}
    also = extra_objectives(cfg)
    if also:  # multi-objective search: every objective's value, in the sweeper's direction order
        objective["metrics"] = [metric, *[m for m, _ in also]]
        objective["modes"] = [mode, *[d for _, d in also]]
        objective["values"] = [best, *[final.get(m, math.nan) for m, _ in also]]
    return objective


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (``cfg.train``) and test the best checkpoint (``cfg.test``); return the run's results.

    The result holds ``objective`` (metric, mode, best value), ``metrics`` (final train/val/test scalars),
    ``best_checkpoint`` and the logger objects (under ``loggers``, not serialisable).
    """
    import lightning.pytorch as pl  # lazy, like all of this function's imports: see the note at the top

    from imagelab.callbacks.parameter_count import count_parameters
    from imagelab.core.checkpoint_io import uploads_checkpoints
    from imagelab.core.devices import resolve_precision

    quiet_lightning_handlers()  # Lightning's own console handler would print each of its lines twice

    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if HydraConfig.initialized():
        install_hydra_job_subprocess_cmd()

    datamodule, model, (metric, mode) = _data_and_model(cfg)
    output_dir = Path(cfg.paths.output_dir)
    resumed, ckpt_path = _resume(cfg, output_dir)
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(
            cfg.trainer.get("precision"), cfg.trainer.get("accelerator")
        )
    run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = run_callbacks(cfg, run_config)
    loggers = instantiate_loggers(cfg.get("logger"), wandb_id=resumed.wandb_id if resumed else None)
    callbacks = with_loggers(callbacks, loggers, run_config)
    io_options = {}
    if "background" in cfg.checkpoint_io and uploads_checkpoints(loggers):
        # a logger that uploads each checkpoint as it is saved reads the file at once
        io_options["background"] = False
    checkpoint_io = instantiate_node(cfg.checkpoint_io, "checkpoint_io", **io_options)
    trainer: pl.Trainer = instantiate_node(
        cfg.trainer, "trainer", callbacks=callbacks, logger=False, plugins=[checkpoint_io]
    )

    if cfg.get("train", True):
        if resumed:
            log.info("resuming %s from %s (W&B run %s)", output_dir, resumed.checkpoint, resumed.wandb_id)
        with _heap_frozen_while_fitting():
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_metrics = _scalar_metrics(trainer.callback_metrics, ("train/", "val/"))
    best_path, best_value = _best_checkpoint(trainer, fit_metrics, metric)
    test_metrics = _test(trainer, model, datamodule, best_path) if cfg.get("test", True) else {}
    final = {**fit_metrics, **test_metrics, **count_parameters(model)}
    return {
        "loggers": loggers,
        "trainer": trainer,
        "objective": _objective(cfg, metric, mode, best_value, final),
        "metrics": {**final, **_callback_metrics(callbacks)},
        "best_checkpoint": best_path,
        "is_global_zero": trainer.is_global_zero,
    }
