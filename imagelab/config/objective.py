"""The metric a run optimises: picked by config or, with ``auto``, by the model itself."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, open_dict

from imagelab.core.errors import UserError


def resolve_objective(cfg: DictConfig, model: Any) -> tuple[str, str]:
    """Fill ``cfg.objective.metric``/``mode`` (``auto`` = the model's ``default_objective``) and return them."""
    objective = cfg.get("objective") or {}
    metric, mode = objective.get("metric", "auto"), objective.get("mode", "auto")
    default = getattr(model, "default_objective", None)
    if metric == "auto" or mode == "auto":
        if default is None:
            raise UserError(
                f"{type(model).__name__} has no default_objective: set objective.metric and objective.mode"
            )
        metric = default[0] if metric == "auto" else metric
        mode = default[1] if mode == "auto" else mode
    if mode not in ("min", "max"):
        raise UserError(f"objective.mode={mode!r} must be min or max")
    with open_dict(cfg):
        cfg.objective = {**dict(objective), "metric": metric, "mode": mode}  # keeps `also` (more objectives)
    return metric, mode


def extra_objectives(cfg: DictConfig) -> list[tuple[str, str]]:
    """``objective.also``: further (metric, mode) pairs of a multi-objective search (e.g. NSGA-II), checked.

    Each value is read from the job's final metrics (e.g. ``model/params_trainable``, ``test/acc``).
    """
    pairs = []
    for item in (cfg.get("objective") or {}).get("also") or []:
        metric, mode = item.get("metric"), item.get("mode")
        if not metric or mode not in ("min", "max"):
            raise UserError(f"objective.also entries need a metric and mode min|max, got {dict(item)}")
        pairs.append((str(metric), str(mode)))
    return pairs
