"""The task-kind interface: everything the scripts do differently for denoisers, classifiers or a user's task.

A task kind is one object that the scripts ask instead of branching on a name: how to export its network
(dynamic axes), how to average outputs (TTA and ensembles), what ensemble members must share, the metric a
deployed variant is scored with, the eval report and what pruning supports. (The server's codec per kind,
which needs the inference tasks' loaders, is one layer up: ``imagelab.tasks.serve_codecs``.)
A new task is one module: a LightningModule, a ``TaskKind`` subclass, and ``MyKind().register(MyModule)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig
from torch import Tensor, nn

from imagelab.config.kind_registry import register_kind
from imagelab.core.errors import UserError
from imagelab.kinds.report import Column, rows_table
from imagelab.tracking.console import show
from lightning_modules.tta import OutputAveraging

Runner = Callable[[Tensor], Tensor]
"""A model variant as a function: float (B, C, H, W) batch -> output tensor on the CPU."""


def unsupported_pruning(name: Any) -> UserError:
    """The error for a network whose pruned widths its model config cannot describe."""
    return UserError(
        f"structured pruning supports DnCNN denoisers and small_cnn classifiers, not {name!r}: its pruned "
        "widths cannot be written into its model config"
    )


@dataclass
class EvalResults:
    """What ``scripts/eval.py`` measured, handed to the kind's report.

    ``rows`` are (label, test metrics) of each scored model: ensemble members, the model without TTA and the
    final one (last); ``metrics`` are the final model's, which the report may extend (e.g. baselines).
    """

    cfg: DictConfig
    run_cfg: DictConfig
    datamodule: Any
    rows: list[tuple[str, dict[str, float]]]
    metrics: dict[str, float]
    loggers: list[Any] = field(default_factory=list)
    attacks: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunePlan:
    """What structured pruning changes in a module: the network to prune, the layers whose outputs stay, and
    ``setting(net) -> (config key, value before, value after)`` reading the pruned width back."""

    net: nn.Module
    keep: list[nn.Module]
    setting: Callable[[nn.Module], tuple[str, Any, Any]]
    config_updates: dict[str, Any] = field(default_factory=dict)  # replaced nodes of the pruned run config


class TaskKind:
    """One kind of task (what a LightningModule's checkpoints hold); subclass it for a new task.

    Attributes:
        name: what checkpoints, exported files and messages call the kind (``denoiser``, ``classifier``).
        scripts: the scripts that use such checkpoints (the hint when a checkpoint is given to the wrong one).
        outputs: how outputs of TTA transforms and ensemble members are averaged (``lightning_modules.tta``);
            None: the kind has no TTA and no ensembles.
        ensemble_shares: what the members of an ensemble must share (named when they differ).
        attacks: whether ``scripts/eval.py attack=...`` (adversarial robustness) applies.
    """

    name: str = ""
    scripts: str = "scripts/eval.py"
    outputs: OutputAveraging | None = None
    ensemble_shares: str = "number of channels"
    attacks: bool = False

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def register(self, *module_classes: type) -> TaskKind:
        """Make checkpoints of ``module_classes`` (and their subclasses) of this kind; returns self."""
        for module_class in module_classes:
            register_kind(module_class, self)
        return self

    def network(self, module: Any) -> nn.Module:
        """The plain network (eval mode) that export, pruning and serving use: ``module.net`` by default."""
        return module.net.eval()

    def metadata(self, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
        """What an exported model needs to be used alone besides its kind (channels, input, output, ...)."""
        return {
            "channels": getattr(module, "channels", None),
            "network": dict(run_cfg.model.get("net") or {}),
        }

    def export_axes(self) -> tuple[dict[int, str], dict[int, str]]:
        """Dynamic axes of the exported input and output: the batch by default."""
        return {0: "batch"}, {0: "batch"}

    def ensemble_signature(self, module: Any) -> tuple[Any, ...]:
        """What must agree between ensemble members for them to share data and be averaged."""
        return (getattr(module, "channels", None),)

    def test_metrics(self, run: Runner, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """The task metric of a deployed variant ``run`` on the test split's (input, target) batches."""
        raise NotImplementedError(f"the {self.name} task kind does not score deployed models")

    def eval_report(self, results: EvalResults) -> list[str]:
        """Print what ``scripts/eval.py`` found (the default: the rows' metrics when several were scored).

        May add to ``results.metrics`` and log it; returns the metric names it printed (the final results
        table skips them).
        """
        if len(results.rows) > 1:
            keys = sorted(results.rows[-1][1])
            show(rows_table(results.rows, [Column(k, k.removeprefix("test/")) for k in keys]))
        return []

    def prune_plan(self, module: Any, run_cfg: DictConfig) -> PrunePlan:
        """What structured pruning changes; UserError when the kind or its architecture is not supported."""
        raise unsupported_pruning(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
