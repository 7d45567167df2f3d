"""The callback list of a training run, assembled in one place and in one documented order.

Lightning calls callbacks in list order (it moves checkpoint callbacks to the end itself). The order is:

1. :class:`~imagelab.callbacks.deferred_loggers.AttachLoggersAfterDataSetup`: first, because the loggers
   exist for the others only once its ``setup`` has run (``SpeedSwitches.setup`` logs to them);
2. the config's callbacks (``cfg.callbacks``) in config order, less a ``LearningRateMonitor`` when the run
   has no logger (``logger=none``: Lightning refuses one);
3. the callbacks every run gets: the run config in each checkpoint, parameter counts, the graceful stop on
   a signal (agreed across ranks every ``cfg.guard_every_n_steps``), the hider of empty per-step hooks, and
   the lifeline that tells rank 0 of a SLURM job which rank died (``imagelab.tasks.rank_lifeline``);
4. the switches: ``cfg.speed`` (``SpeedSwitches``) and ``cfg.lr_scaling`` (``LRScaling``, unless ``rule:
   none``);
5. knowledge distillation when ``cfg.distill.teacher`` is set.

:func:`run_callbacks` builds 2-5 before the loggers exist (a config mistake there ends the run before a
logger writes anything); :func:`with_loggers` adds 1 once they do.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from imagelab.config.instantiation import instantiate_callbacks, instantiate_node
from imagelab.core.code_version import record_code_version
from imagelab.tracking.wandb_files import loggable_config

# Lightning and the callbacks built on it are imported inside the functions, like in imagelab.tasks.training.


def switch_callbacks(cfg: DictConfig) -> list[Any]:
    """The callbacks of the ``speed`` and ``lr_scaling`` switches (absent keys, or ``rule: none``: none)."""
    from imagelab.callbacks.lr_scaling import LRScaling

    callbacks: list[Any] = []
    speed = cfg.get("speed")
    if speed is not None:
        callbacks.append(instantiate_node(speed, "speed"))
    scaling = cfg.get("lr_scaling")
    if scaling is not None and scaling.get("rule", "none") != "none":
        callbacks.append(LRScaling(scaling.get("rule"), scaling.get("base_batch_size")))
    return callbacks


def run_callbacks(cfg: DictConfig, run_config: dict[str, Any]) -> list[Any]:
    """Items 2-5 of the module docstring's order: configured, every run's, switches, distillation."""
    from imagelab.callbacks.check_points import DEFAULT_EVERY
    from imagelab.callbacks.graceful_interrupt import GracefulInterrupt
    from imagelab.callbacks.parameter_count import ParameterCountLogger
    from imagelab.callbacks.run_config import RunConfigInCheckpoint
    from imagelab.callbacks.step_hooks import SkipNoOpStepHooks
    from imagelab.tasks.rank_lifeline import RankLifeline

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks += [
        RunConfigInCheckpoint(run_config),
        ParameterCountLogger(),
        GracefulInterrupt(cfg.get("guard_every_n_steps", DEFAULT_EVERY)),
        SkipNoOpStepHooks(),  # Lightning then calls only the per-step hooks that do something
        RankLifeline(),  # a no-op unless SLURM started two or more ranks
    ]
    callbacks += switch_callbacks(cfg)
    if (cfg.get("distill") or {}).get("teacher"):  # knowledge distillation from a classifier checkpoint
        callbacks.append(instantiate_node(cfg.distill, "distill"))
    return callbacks


def with_loggers(callbacks: list[Any], loggers: list[Any], run_config: dict[str, Any]) -> list[Any]:
    """The final list: the logger attachment first, then ``callbacks`` (no LR monitor without a logger)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from imagelab.callbacks.deferred_loggers import AttachLoggersAfterDataSetup

    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    hyperparameters = loggable_config(
        {**run_config, "code": record_code_version(None)}
    )  # without unfilled None
    return [AttachLoggersAfterDataSetup(loggers, hyperparameters), *callbacks]
