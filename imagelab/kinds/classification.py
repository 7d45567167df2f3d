"""The classification task kind: image in, class logits out (``lightning_modules.classifier.ClassifierModule``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from imagelab.core.errors import UserError
from imagelab.kinds.base import EvalResults, PrunePlan, Runner, TaskKind, unsupported_pruning
from imagelab.kinds.report import Column, rows_table
from imagelab.tracking.console import show
from lightning_modules.backbones import head_module_name
from lightning_modules.classifier import ClassifierModule
from lightning_modules.finetuning import finetune_config
from lightning_modules.tta import LogitOutputs

ACCURACY_AND_LOSS = [Column("test/acc", "accuracy"), Column("test/loss", "loss")]


class ClassificationKind(TaskKind):
    """Classifiers: a fixed input size, logits averaged as class probabilities, robust accuracy under attack."""

    name = "classifier"
    scripts = "scripts/eval.py or scripts/predict.py"
    outputs = LogitOutputs()
    ensemble_shares = "classes and preprocessing"
    attacks = True

    def network(self, module: Any) -> nn.Module:
        """The timm network with LoRA adapters merged."""
        return module.inference_network().eval()

    def metadata(self, module: Any, run_cfg: DictConfig, source: str) -> dict[str, Any]:
        """Channels, preprocessing and class names (UserError when the checkpoint lacks them)."""
        preprocess = module.preprocess or {}
        if not preprocess or not module.class_names:
            raise UserError(
                f"{source} does not record its preprocessing or classes: retrain with scripts/train.py"
            )
        return {
            "channels": int(preprocess.get("channels", 3)),
            "input": "float32 (B, C, H, W), resized and normalised as in `preprocess`",
            "output": "float32 (B, num_classes) logits",
            "preprocess": dict(preprocess),
            "class_names": list(module.class_names),
            "network": str(run_cfg.model.get("backbone", "")),
        }

    def ensemble_signature(self, module: Any) -> tuple[Any, ...]:
        """The classes (in order) and the preprocessing: the data is built from the first member's config."""
        pre = dict(module.preprocess or {})
        return (
            tuple(module.class_names or []),
            tuple(pre.get("image_size") or ()),
            pre.get("channels"),
            tuple(pre.get("mean") or ()),
            tuple(pre.get("std") or ()),
        )

    def test_metrics(self, run: Runner, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Top-1 accuracy on (images, labels)."""
        acc: Any = None
        with torch.inference_mode():
            for images, labels in batches:
                logits = run(images).float()
                acc = acc or MulticlassAccuracy(logits.shape[-1], average="micro")
                acc.update(logits, labels)
        return {"accuracy": float(acc.compute())}

    def eval_report(self, results: EvalResults) -> list[str]:
        """Clean and attacked accuracy (``attack=...``), and accuracy/loss of every scored model."""
        from lightning_modules.adversarial import Attack  # lazy: only attack=... needs it

        name, metrics = results.rows[-1][0], results.metrics
        if results.attacks:
            rows = [("clean", {"acc": metrics.get("test/acc", float("nan"))})]
            rows += [
                (Attack.from_config(a).label, {"acc": metrics.get(f"test/acc_{k}", float("nan"))})
                for k, a in results.attacks.items()
            ]
            show(
                rows_table(
                    rows, [Column("acc", "accuracy")], label_width=48, first=f"test accuracy of {name}"
                )
            )
        if len(results.rows) > 1:
            show(rows_table(results.rows, ACCURACY_AND_LOSS))
        return []

    def prune_plan(self, module: Any, run_cfg: DictConfig) -> PrunePlan:
        """``small_cnn``: one width per stage; the head keeps its outputs; LoRA merged, the net trains in full."""
        backbone = run_cfg.model.get("backbone")
        if backbone != "small_cnn":
            raise unsupported_pruning(backbone)
        net = module.inference_network()
        before = list(run_cfg.model.get("timm_kwargs", {}).get("widths", [32, 64, 128]))

        def setting(pruned: nn.Module) -> tuple[str, Any, Any]:
            return "model.timm_kwargs.widths", before, [stage[0][0].out_channels for stage in pruned.stages]

        keep = [net.get_submodule(head_module_name(net))]
        return PrunePlan(net, keep, setting, {"model.finetune": finetune_config(None)})


CLASSIFICATION = ClassificationKind().register(ClassifierModule)
"""The classification kind, registered for ``ClassifierModule`` checkpoints."""
