"""The classifier's network: a timm backbone with a head for the data's classes and a fine-tuning strategy.

``ClassifierNet`` holds the architecture options of ``model.*`` (backbone name, channels, dropout, timm
options, weights to start from) and builds the network three ways: shape-only on the meta device (classes not
known yet: free to build, fails fast on a wrong name or option), plain (classes known; e.g. rebuilt from a
checkpoint), or with its initial weights (timm's pretrained ones and/or a local file; fitting only, so that
evaluation and prediction never need the network).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from imagelab.core.errors import UserError
from imagelab.tracking.console import say
from lightning_modules.backbones import (
    create_backbone,
    head_module_name,
    load_backbone_weights,
    read_weights_file,
    reset_head,
)
from lightning_modules.finetuning import FinetuneStrategy

log = logging.getLogger(__name__)


def base_model(net: nn.Module) -> nn.Module:
    """The timm model inside ``net`` (for LoRA: the base model that carries the adapters)."""
    return net.get_base_model() if hasattr(net, "get_base_model") else net


@dataclass
class ClassifierNet:
    """Builds the classifier's network from the ``model.*`` architecture options (see the module docstring)."""

    backbone: str
    strategy: FinetuneStrategy
    pretrained: bool = False
    checkpoint_path: str | None = None
    in_chans: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_initial_weights(self) -> bool:
        """True when fitting starts from timm's pretrained weights or a local weights file."""
        return bool(self.pretrained or self.checkpoint_path)

    def _timm_model(self, num_classes: int, pretrained: bool) -> nn.Module:
        return create_backbone(
            self.backbone,
            num_classes=num_classes,
            in_chans=self.in_chans,
            drop_rate=self.drop_rate,
            drop_path_rate=self.drop_path_rate,
            pretrained=pretrained,
            timm_kwargs=self.timm_kwargs,
        )

    def shape_only(self) -> nn.Module:
        """The headless architecture on the meta device (no memory, no initialisation)."""
        with torch.device("meta"):
            return self._timm_model(0, pretrained=False)

    def build(self, num_classes: int, with_initial_weights: bool = False) -> nn.Module:
        """The network to train: ``num_classes`` head, strategy applied; optionally with its initial weights.

        What a weights file gave is logged and printed (once, by rank zero)."""
        net = self._timm_model(num_classes, pretrained=with_initial_weights and self.pretrained)
        if with_initial_weights and self.pretrained:
            log.info("backbone %s: timm's pretrained weights loaded", self.backbone)
        if with_initial_weights and self.checkpoint_path:
            state = read_weights_file(self.checkpoint_path)
            summary = load_backbone_weights(net, state, self.checkpoint_path)
            log.info("backbone %s: %s", self.backbone, summary)
            say(f"weights: {summary}")
        if getattr(net, "num_classes", num_classes) != num_classes:
            reset_head(net, num_classes)
        return self.strategy.apply(net)

    @staticmethod
    def head_name(net: nn.Module) -> str:
        """Dotted name of the head inside the timm model of ``net``."""
        return head_module_name(base_model(net))


def check_classes(num_classes: int | None, class_names: list[str] | None) -> int | None:
    """The class count given by ``model.num_classes`` / ``model.class_names`` (None = from the data)."""
    if class_names is not None:
        if num_classes is not None and int(num_classes) != len(class_names):
            raise UserError(f"model.num_classes={num_classes} but {len(class_names)} class_names were given")
        num_classes = len(class_names)
    if num_classes is not None and int(num_classes) < 2:
        raise UserError(f"model.num_classes must be >= 2 (or null = from the data), got {num_classes}")
    return None if num_classes is None else int(num_classes)


def classes_for_data(known: list[str] | None, num_classes: int | None, data_names: list[str]) -> list[str]:
    """The class names to build the head for: the data's (which must match ``known`` ones), else 0..n-1."""
    if data_names:
        if known is not None and known != data_names:
            raise UserError(
                f"the model was built for classes {known[:5]}... but the data has {data_names[:5]}...; "
                "use data with the same classes (or fine-tune from it with model.checkpoint_path=...)"
            )
        return list(data_names)
    if known is not None:
        return list(known)
    if not num_classes:
        raise UserError(
            "the number of classes is unknown: use a classification datamodule or set model.num_classes"
        )
    return [str(i) for i in range(num_classes)]
