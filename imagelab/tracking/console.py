"""What a run prints: one line per event, the composed config once, the results once at the end.

Library code prints user-facing lines with :func:`say` (rank zero only) and logs everything else.

All console policy lives here (``run_task`` calls it): the third-party messages that nobody can act on are
filtered by message in :data:`NOISE`, Lightning's own console handler (which doubles every Lightning INFO
line next to Hydra's) is removed, the config is printed as a rich tree when ``print_config`` is true, and
the final metrics are printed as one compact table (per-class values only with ``verbose=true``; they are
always in W&B and ``metrics.json``).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from imagelab.core.constants import METRICS_FILE
from imagelab.core.distributed import env_rank
from imagelab.core.hydra_job import in_multirun

# Messages (third-party tips, deprecations inside libraries, notes about defaults) that a user of this
# framework cannot act on. Matched against the start of the message, so unrelated messages stay visible.
NOISE: tuple[str, ...] = (
    r"💡 Tip:",  # Lightning's litlogger / litmodels advertisements
    r"Trainer already configured with model summary callbacks",  # ours (model_summary.py) replaces the default
    r"TPU available:",
    r"Loading `train_dataloader` to estimate number of stepping batches",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's _pytree against torch >= 2.10
    r"Seed set to",
    r"Restoring states from the checkpoint path at",  # the next line says the same ("Loaded"/"Restored")  # the seed is in the printed config and in the run's config.yaml
)
_NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE))
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def is_noise(message: str) -> bool:
    """True for a message listed in :data:`NOISE`."""
    return bool(_NOISE_RE.match(message.lstrip()))


class NoiseFilter(logging.Filter):
    """Logging filter that drops the records whose message is listed in :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless its message is noise."""
        try:
            return not is_noise(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is not ours to hide
            return True


_FILTER = NoiseFilter()


def quiet_third_party() -> None:
    """Install the noise filters and leave one console handler chain (Hydra's) for every log line.

    Lightning adds its own ``INFO: ...`` stream handler to the ``lightning`` logger while still propagating
    to the root logger, so under Hydra each Lightning line was printed twice; that handler is removed when the
    root logger already has handlers. Idempotent.
    """
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    quiet_lightning_handlers()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's storage migrations: 7 INFO lines


def quiet_lightning_handlers() -> None:
    """Drop the console handler Lightning adds to its loggers on import (Hydra's root handlers print its lines).

    Does nothing until Lightning is imported, so entry points that never load it (``denoise.py
    model_path=...``) stay light; the tasks that load it call this again right after their import.
    """
    if "lightning" not in sys.modules:
        return
    root = logging.getLogger()
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        if root.handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True


def quiet_wandb_logger(logger: Any) -> Any:
    """Keep a ``WandbLogger`` from passing W&B's deprecated ``anonymous`` setting (its warning is noise)."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def _inline(value: Any) -> str:
    """A leaf value on one line: lists in brackets, strings bare, None as null."""
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _add_branch(tree: Any, mapping: dict[str, Any]) -> None:
    for key, value in mapping.items():
        if isinstance(value, dict) and value and any(isinstance(v, dict) for v in value.values()):
            _add_branch(tree.add(f"[bold]{key}"), value)
        elif isinstance(value, dict) and value:
            branch = tree.add(f"[bold]{key}")
            for k, v in value.items():
                branch.add(Text(f"{k}: {_inline(v)}", overflow="fold"))
        else:
            tree.add(Text(f"{key}: {_inline(value)}", overflow="fold"))


def config_tree(cfg: DictConfig) -> Any:
    """The composed config (without the ``hydra`` node) as a ``rich.tree.Tree``: one branch per group,
    one line per setting (lists inline); interpolations are resolved where they can be."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only a running job can resolve: show the config unresolved
        plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    tree = Tree("[bold]config", guide_style="dim")
    leaves = {k: v for k, v in plain.items() if not isinstance(v, dict)}
    _add_branch(tree, {"run": leaves} if leaves else {})
    _add_branch(tree, {k: v for k, v in plain.items() if isinstance(v, dict)})
    return tree


def is_rank_zero() -> bool:
    """True in the process of global rank zero (or the only process).

    Lightning's rank-zero record (``rank_zero_only.rank``, set by the strategy of a running Trainer) decides;
    before Lightning is loaded, the launcher's environment does (:func:`imagelab.core.distributed.env_rank`).
    Nothing is imported here: the record exists only once Lightning has loaded it.
    """
    record = getattr(sys.modules.get("lightning_utilities.core.rank_zero"), "rank_zero_only", None)
    rank = getattr(record, "rank", None)
    return (env_rank() if rank is None else rank) == 0


def say(*lines: str, err: bool = False) -> None:
    """Print user-facing lines (a status, a report, where a file went) once: in the rank-zero process only.

    The library's console output goes through here (log records go through ``logging``); ``err`` writes to
    stderr, for error reports.
    """
    if not is_rank_zero():
        return
    stream = sys.stderr if err else sys.stdout
    for line in lines:
        print(line, file=stream, flush=True)


def print_config(cfg: DictConfig) -> None:
    """Print the composed config once as a tree (rank zero only)."""
    if not is_rank_zero():
        return
    Console(soft_wrap=False).print(config_tree(cfg))


def prepare_console(cfg: DictConfig) -> None:
    """Start of a job: quiet the third-party noise and print the config when ``print_config`` is true.

    Jobs of a ``-m`` sweep do not print the tree (Hydra prints each job's overrides as it launches it, and the
    full config is in every job's ``.hydra/config.yaml``)."""
    quiet_third_party()
    if cfg.get("print_config", False) and not in_multirun():
        print_config(cfg)


def _shown_metrics(metrics: dict[str, Any], verbose: bool) -> dict[str, float]:
    shown = {}
    for key, value in metrics.items():
        if not key.startswith(("val/", "test/")) or key.endswith("loss"):
            continue
        if not verbose and "/acc_class/" in key:
            continue
        try:
            shown[key] = float(value)
        except (TypeError, ValueError):
            continue
    return shown


def results_table(metrics: dict[str, Any], verbose: bool = False) -> Any:
    """A compact ``rich.table.Table``: one row per metric name, one column per split (val, test, ...)."""
    shown = _shown_metrics(metrics, verbose)
    splits: list[str] = []
    rows: dict[str, dict[str, float]] = {}
    for key, value in shown.items():
        split, name = key.split("/", 1)
        if split not in splits:
            splits.append(split)
        rows.setdefault(name, {})[split] = value
    table = Table(title="results", title_justify="left", box=None, pad_edge=False, header_style="bold")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name, values in rows.items():
        table.add_row(name, *(f"{values[s]:.4f}" if s in values else "" for s in splits))
    return table


def print_results(
    record: dict[str, Any], output_dir: Path | None, verbose: bool = False, printed: list[str] | None = None
) -> None:
    """End of a completed job: the results table once, then where the checkpoint, run and W&B run are.

    ``printed`` names metrics the task has shown already in its own table (eval.py's baseline table).
    """
    console = Console(soft_wrap=True, highlight=False)
    metrics = {k: v for k, v in (record.get("metrics") or {}).items() if k not in (printed or [])}
    if _shown_metrics(metrics, verbose):
        console.print(results_table(metrics, verbose))
        hidden = sum("/acc_class/" in k for k in metrics) if not verbose else 0
        if hidden:
            console.print(f"({hidden} per-class values in {METRICS_FILE} and W&B; verbose=true prints them)")
    if record.get("best_checkpoint"):
        console.print(f"best checkpoint: {record['best_checkpoint']}")
    if output_dir is not None:
        console.print(f"run directory:   {output_dir}")
    wandb_info = record.get("wandb")
    if wandb_info and wandb_info.get("mode") == "offline":
        console.print(f"W&B run saved offline; upload it with:  wandb sync {wandb_info['run_dir']}")
    elif wandb_info and wandb_info.get("url"):
        console.print(f"W&B run: {wandb_info['url']}")
    sys.stdout.flush()


def show(text: str) -> None:
    """Print a task's own output (a table, where its files went) once, on rank zero, as plain text.

    Rich's console, with markup and highlighting off, so that brackets in paths and lists print as they are.
    """
    if env_rank() == 0:
        Console(soft_wrap=True, highlight=False, markup=False).print(text)
        sys.stdout.flush()
