"""The classifier's options: ``ClassifierModule``'s keywords and its checkpoint's ``hyper_parameters``.

They are declared once, in :class:`ClassifierOptions`; the module saves ``dataclasses.asdict`` of them, so a
checkpoint's ``hyper_parameters`` keys are these field names, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagelab.core.errors import UserError
from imagelab.core.plain_config import to_plain
from lightning_modules.classifier_net import check_classes
from lightning_modules.finetuning import finetune_config
from lightning_modules.optim import check_optimization

# conf/model/optimizer/adamw.yaml's node, for modules built in code
DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "lightning_modules.optim.create_optimizer",
    "_partial_": True,
    "opt": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
}


@dataclass
class ClassifierOptions:
    """What a classifier is built from (``conf/model/classifier*.yaml``), in the plain types a checkpoint stores.

    ``backbone``: a timm model name; ``pretrained``: timm's weights; ``checkpoint_path``: a weights file for the
    backbone; ``num_classes``/``class_names``: the head (None = from the data); ``in_chans``, ``drop_rate``,
    ``drop_path_rate``, ``timm_kwargs``: passed to timm; ``finetune``: the strategy node (None = full);
    ``optimizer``/``scheduler``: ``_partial_`` nodes (None optimizer = AdamW, :data:`DEFAULT_OPTIMIZER`);
    ``label_smoothing``; ``num_misclassified``: test images in the error gallery; ``per_class_max``: most
    classes with per-class validation accuracy; ``preprocess``: the data's normalisation (set from the data).
    Construction converts the values and fails with a UserError on bad optimisation or class options.
    """

    backbone: str = "resnet50"
    pretrained: bool = False
    checkpoint_path: str | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    in_chans: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    timm_kwargs: dict | None = None
    finetune: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    label_smoothing: float = 0.0
    num_misclassified: int = 32
    per_class_max: int = 20
    preprocess: dict | None = None

    def __post_init__(self) -> None:
        """Plain types, the defaults filled in (AdamW, the strategy's ``_target_``), the options checked."""
        self.finetune, self.optimizer, self.scheduler, self.timm_kwargs, self.class_names, self.preprocess = (
            to_plain(v)
            for v in (
                self.finetune,
                self.optimizer,
                self.scheduler,
                self.timm_kwargs,
                self.class_names,
                self.preprocess,
            )
        )
        if self.optimizer is None:
            self.optimizer = dict(DEFAULT_OPTIMIZER)
        self.finetune = finetune_config(self.finetune)
        check_optimization(self.optimizer, self.scheduler)  # a bad node fails now, not after data setup
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
        self.num_classes = check_classes(self.num_classes, self.class_names)
        self.backbone = str(self.backbone)
        self.pretrained = bool(self.pretrained)
        self.checkpoint_path = None if self.checkpoint_path is None else str(self.checkpoint_path)
        self.in_chans = int(self.in_chans)
        self.drop_rate = float(self.drop_rate)
        self.drop_path_rate = None if self.drop_path_rate is None else float(self.drop_path_rate)
        self.timm_kwargs = dict(self.timm_kwargs or {})
        self.label_smoothing = float(self.label_smoothing)
        self.num_misclassified = int(self.num_misclassified)
        self.per_class_max = int(self.per_class_max)
