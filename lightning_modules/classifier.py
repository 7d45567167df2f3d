"""LightningModule that fine-tunes (or trains from scratch) any timm model as an image classifier.

The backbone is built from config at construction; the head gets its size from the data: when
``num_classes`` is not given it is created in ``setup()`` from the datamodule's ``class_names``, and the class
names then travel with every checkpoint (hyper-parameters, and the run config that ``scripts/eval.py`` and
``scripts/predict.py`` rebuild the model from). Pretrained (timm hub) or local-file weights are loaded when
fitting starts, never when a checkpoint is re-opened, so evaluation and prediction need no network.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from experiment_utils.errors import UserError
from experiment_utils.plain_config import to_plain
from lightning_modules.backbones import (
    create_backbone,
    head_module_name,
    load_backbone_weights,
    read_weights_file,
)
from lightning_modules.backbones import reset_head as reset_backbone_head
from lightning_modules.error_gallery import ConfidentErrors
from lightning_modules.finetuning import (
    apply_finetuning,
    check_finetune,
    modules_kept_in_eval,
    save_lora_adapter,
)
from lightning_modules.optim import build_optimizer, check_optimization, configure_optimization
from lightning_modules.step_logging import epoch_mean, should_log_step, update_epoch_mean

log = logging.getLogger(__name__)

# conf/model/optimizer/adamw.yaml's node, for modules built in code
DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "lightning_modules.optim.create_optimizer",
    "_partial_": True,
    "opt": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
}
RUN_CONFIG_KEY = "run_config"


def _split_metrics(num_classes: int) -> MetricCollection:
    """top-1 (``acc``), ``top5`` (5+ classes), macro F1 and per-class accuracy for one split."""
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "acc_class": MulticlassAccuracy(num_classes, average="none"),
    }
    if num_classes >= 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


class ClassifierModule(pl.LightningModule):
    """Image classifier on a timm backbone with a fine-tuning strategy (``lightning_modules.finetuning``).

    Batches are ``(images, labels)``: float (B, C, H, W) normalised images and int64 labels, or soft (B, K)
    targets from mixup/cutmix. Logs ``train/loss``, ``train/acc``; ``val/loss``, ``val/acc``, ``val/top5``
    (5+ classes), ``val/f1_macro``, ``val/acc_best`` and per-class accuracy ``val/acc_class/<name>`` (up to
    ``per_class_max`` classes); the same for ``test/`` (per class always) plus a confusion-matrix image and a
    grid of misclassified test images.

    Optimisation: ``optimizer``/``scheduler`` are ``_partial_`` nodes (``lightning_modules.optim``): timm's
    optimizer factory with weight decay never on biases, norms or timm's ``no_weight_decay()`` tensors;
    ``optimizer.head_lr`` gives the head its own learning rate; ``optimizer.layer_decay`` < 1 multiplies the LR
    of each earlier layer group by that factor (timm ``param_groups_layer_decay``).
    """

    default_objective = ("val/acc", "max")

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        timm_kwargs: dict | None = None,
        finetune: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        label_smoothing: float = 0.0,
        num_misclassified: int = 32,
        per_class_max: int = 20,
        preprocess: dict | None = None,
    ) -> None:
        super().__init__()
        finetune, optimizer, scheduler, timm_kwargs, class_names, preprocess = (
            to_plain(v) for v in (finetune, optimizer, scheduler, timm_kwargs, class_names, preprocess)
        )
        optimizer = optimizer if optimizer is not None else dict(DEFAULT_OPTIMIZER)
        finetune = check_finetune(finetune)
        self._check_options(optimizer, scheduler, label_smoothing)
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if num_classes is not None and int(num_classes) != len(class_names):
                raise UserError(
                    f"model.num_classes={num_classes} but {len(class_names)} class_names were given"
                )
            num_classes = len(class_names)
        if num_classes is not None and int(num_classes) < 2:
            raise UserError(f"model.num_classes must be >= 2 (or null = from the data), got {num_classes}")
        self.save_hyperparameters(
            {
                "backbone": str(backbone),
                "pretrained": bool(pretrained),
                "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path),
                "num_classes": None if num_classes is None else int(num_classes),
                "class_names": class_names,
                "in_chans": int(in_chans),
                "drop_rate": float(drop_rate),
                "drop_path_rate": None if drop_path_rate is None else float(drop_path_rate),
                "timm_kwargs": dict(timm_kwargs or {}),
                "finetune": finetune,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "label_smoothing": float(label_smoothing),
                "num_misclassified": int(num_misclassified),
                "per_class_max": int(per_class_max),
                "preprocess": preprocess,
            }
        )
        self.num_classes: int | None = self.hparams["num_classes"]
        self.class_names: list[str] | None = class_names
        self.preprocess: dict | None = preprocess
        self.strategy: str = finetune["strategy"]
        self._eval_module_names: list[str] = []
        self._weights_loaded = False
        self._built = False
        self._head_name = ""
        # The architecture is created now (fails fast on a wrong name or option). Without a class count it is a
        # headless shape-only model on the meta device (free to build); the real one is built in bind_data().
        self._bound_stage = ""
        if self.num_classes:
            self._finish_build(self._create_net(self.num_classes, pretrained=False))
        else:
            with torch.device("meta"):
                self.net = self._create_net(0, pretrained=False)
        self.val_acc_best = MaxMetric()
        self.train_loss = epoch_mean()  # train/loss_epoch, accumulated on the device (step_logging.py)
        # Losses as torchmetrics means: exact under DDP even when processes score different numbers of images
        # (Lightning's sync_dist mean of per-process means is not).
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints so a resumed run remembers its best
        self._misclassified = ConfidentErrors(num_misclassified, num_classes or 2)
        # extra training-loss terms added by callbacks: fn(module, x, logits, loss) -> loss (e.g. distillation)
        self.loss_terms: list[Any] = []

    # --------------------------------------------------------------------------------------------- building
    @staticmethod
    def _check_options(optimizer: dict, scheduler: dict | None, label_smoothing: Any) -> None:
        """Fail at construction (UserError), not after data setup, on bad optimisation options."""
        check_optimization(optimizer, scheduler)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")

    def _create_net(self, num_classes: int, pretrained: bool) -> nn.Module:
        hp = self.hparams
        return create_backbone(
            hp["backbone"],
            num_classes=num_classes,
            in_chans=hp["in_chans"],
            drop_rate=hp["drop_rate"],
            drop_path_rate=hp["drop_path_rate"],
            pretrained=pretrained,
            timm_kwargs=hp["timm_kwargs"],
        )

    def _finish_build(self, net: nn.Module) -> None:
        """Give ``net`` its head of ``num_classes``, apply the fine-tuning strategy, create the metrics."""
        assert self.num_classes is not None
        if getattr(net, "num_classes", self.num_classes) != self.num_classes:
            reset_backbone_head(net, self.num_classes)
        self._head_name = head_module_name(net)
        self.net = apply_finetuning(net, self.hparams["finetune"])
        self._eval_module_names = modules_kept_in_eval(self.net, self.strategy)
        # validate_args=False: the label range checks read values back from the device on every step
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)
        self.val_metrics = _split_metrics(self.num_classes)
        self.test_metrics = _split_metrics(self.num_classes)
        self.test_confusion = MulticlassConfusionMatrix(self.num_classes)
        self._built = True

    def _load_weights_and_build(self) -> None:
        """Fresh network with pretrained (timm) and/or local-file weights, then head and strategy."""
        hp = self.hparams
        assert self.num_classes is not None
        net = self._create_net(self.num_classes, pretrained=hp["pretrained"])
        if hp["pretrained"]:
            log.info("backbone %s: timm's pretrained weights loaded", hp["backbone"])
        if hp["checkpoint_path"]:
            summary = load_backbone_weights(
                net, read_weights_file(hp["checkpoint_path"]), hp["checkpoint_path"]
            )
            log.info("backbone %s: %s", hp["backbone"], summary)
            if self.global_rank == 0:
                print(f"weights: {summary}")
        self._finish_build(net)
        self._weights_loaded = True

    def backbone_model(self) -> nn.Module:
        """The timm model inside ``net`` (for LoRA: the base model that carries the adapters)."""
        return self.net.get_base_model() if hasattr(self.net, "get_base_model") else self.net

    def backbone_data_config(self) -> dict[str, Any]:
        """timm's data config of the backbone: input_size, mean, std, interpolation, crop_pct."""
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(self.backbone_model())
        return {
            "input_size": [int(v) for v in cfg["input_size"]],
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "crop_pct": float(cfg.get("crop_pct", 1.0)),
        }

    def bind_data(self, datamodule: Any, stage: str) -> None:
        """Size the head from the data's classes, load the initial weights (fit only), share preprocessing.

        Classification datamodules call this at the end of their own ``setup`` (Lightning sets up the data
        before the callbacks and the module), so callbacks that act in ``setup`` (channels-last, compile) see
        the final network. ``setup`` calls it too, for datamodules that do not. Idempotent per stage.
        """
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum
        key = f"{id(datamodule)}:{stage}"
        if self._bound_stage == key:
            return
        if any(p.is_meta for p in self.net.parameters()):
            # storage without initialisation, so that the module can still be moved if building fails below
            self.net = self.net.to_empty(device="cpu")
        names = list(getattr(datamodule, "class_names", None) or [])
        if names:
            if self.class_names is not None and self.class_names != names:
                raise UserError(
                    f"the model was built for classes {self.class_names[:5]}... but the data has {names[:5]}...; "
                    "use data with the same classes (or fine-tune from it with model.checkpoint_path=...)"
                )
            self.class_names, self.num_classes = names, len(names)
        elif not self.num_classes:
            raise UserError(
                "the number of classes is unknown: use a classification datamodule or set model.num_classes"
            )
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.num_classes)]
        self.hparams["num_classes"], self.hparams["class_names"] = self.num_classes, list(self.class_names)
        hp = self.hparams
        wants_weights = (
            stage == "fit" and not self._weights_loaded and (hp["pretrained"] or hp["checkpoint_path"])
        )
        if wants_weights:
            self._load_weights_and_build()
        elif not self._built:
            self._finish_build(self._create_net(self.num_classes, pretrained=False))
        if datamodule is not None and hasattr(datamodule, "set_model_data_config"):
            datamodule.set_model_data_config(self.backbone_data_config())
            self.preprocess = datamodule.preprocess_config()
            self.hparams["preprocess"] = self.preprocess
        self._bound_stage = key

    def setup(self, stage: str) -> None:
        """Bind to the trainer's datamodule, unless the datamodule already did (see ``bind_data``)."""
        self.bind_data(getattr(self.trainer, "datamodule", None), stage)

    # ------------------------------------------------------------------------------------------ train mode
    def train(self, mode: bool = True) -> ClassifierModule:
        """``nn.Module.train`` that keeps the frozen parts of the strategy (e.g. batch-norm stats) in eval mode."""
        super().train(mode)
        names = getattr(self, "_eval_module_names", None)
        if mode and names:
            modules = dict(self.net.named_modules())
            for name in names:
                modules[name].eval()
        return self

    def on_train_start(self) -> None:
        """Put the frozen parts in eval mode (after Lightning's check for modules in eval mode)."""
        self.train()

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) of a normalised (B, C, H, W) batch."""
        if not self._built:
            raise UserError(
                "the classifier has no head yet: fit or test it with a datamodule, or set model.num_classes"
            )
        return self.net(x)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        smoothing = self.hparams["label_smoothing"]
        if target.ndim == 2:  # soft targets from mixup/cutmix
            if smoothing > 0:
                target = target * (1.0 - smoothing) + smoothing / target.shape[1]
            return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step; logs ``train/loss`` and ``train/acc`` (against the dominant mixed label)."""
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        for term in self.loss_terms:  # e.g. knowledge distillation (lightning_modules/distillation.py)
            loss = term(self, x, logits, loss)
        hard = y if y.ndim == 1 else y.argmax(dim=1)
        # epoch values accumulate on the device; step values are logged where a logger can see them
        # (lightning_modules/step_logging.py: each self.log call costs 0.6-0.8 ms of CPU)
        self.train_acc.update(logits.detach(), hard)
        update_epoch_mean(self.train_loss, loss, len(x))
        if should_log_step(self, batch_idx):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_epoch_end(self) -> None:
        """Log ``train/loss_epoch`` and ``train/acc`` (synchronised across processes by torchmetrics)."""
        if self.train_loss.update_count == 0:
            return
        loss, acc = self.train_loss.compute(), self.train_acc.compute()
        self.train_loss.reset()
        self.train_acc.reset()
        self.log("train/loss_epoch", loss, prog_bar=True)
        self.log("train/acc", acc)
        # the names Lightning's self.log(on_step=True, on_epoch=True) gave: train/loss_step, train/loss_epoch,
        # and train/loss (the epoch value after the epoch) in callback_metrics / metrics.json only
        self.log("train/loss", loss, logger=False)

    # ------------------------------------------------------------------------------------------ evaluation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Update the validation metrics."""
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits.float(), y), weight=len(y))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.val_metrics.update(logits.detach(), y)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's metrics (synchronised across processes by torchmetrics) and ``val/acc_best``."""
        acc = self._log_split(
            "val", self.val_metrics, per_class=self.num_classes <= self.hparams["per_class_max"]
        )
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def on_test_epoch_start(self) -> None:
        """Start collecting misclassified test images."""
        self._misclassified = ConfidentErrors(self.hparams["num_misclassified"], self.num_classes or 2)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Update the test metrics and the confusion matrix; keep the most confident misclassified images.

        Returns the logits (for callbacks such as ``experiment_utils.wandb_tables.PerImageTable``)."""
        x, y = batch
        logits = self(x)
        self.test_loss.update(F.cross_entropy(logits.float(), y), weight=len(y))
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.test_metrics.update(logits.detach(), y)
        self.test_confusion.update(logits.detach(), y)
        if self.global_rank == 0:
            self._misclassified.offer(x, y, logits)
        return logits

    def on_test_epoch_end(self) -> None:
        """Log test metrics (per-class accuracy for every class), the confusion matrix and misclassified images."""
        self._log_split("test", self.test_metrics, per_class=True)
        matrix = self.test_confusion.compute().cpu().numpy()
        self.test_confusion.reset()
        if self.global_rank != 0 or self._trainer is None or not self.trainer.loggers:
            return
        from experiment_utils.image_logging import log_image_panels
        from experiment_utils.wandb_tables import log_confusion_plot
        from lightning_modules.classification_plots import confusion_matrix_image, image_grid

        names = list(self.class_names or [])
        log_image_panels(
            self.trainer,
            "test/confusion_matrix",
            [confusion_matrix_image(matrix, names)],
            ["rows: true, columns: predicted"],
        )
        log_confusion_plot(self.trainer, matrix, names)  # W&B's interactive matrix beside the PNG
        errors = self._misclassified.select()
        if errors:
            images = [self._denormalize(s[0]) for s in errors]
            titles = [f"{names[t]} → {names[p]} ({c:.2f})" for _, t, p, c in errors]
            caption = f"{len(images)} most confident misclassified test images, spread over the true classes"
            log_image_panels(self.trainer, "test/misclassified", [image_grid(images, titles)], [caption])

    def _log_split(self, split: str, metrics: MetricCollection, per_class: bool) -> Tensor:
        values = metrics.compute()
        metrics.reset()
        per_class_acc = values.pop("acc_class")
        acc = values.pop("acc")
        logged = {f"{split}/{k}": v for k, v in values.items()}
        if per_class:
            for name, value in zip(self.class_names or [], per_class_acc, strict=False):
                logged[f"{split}/acc_class/{name}"] = value
        self.log_dict(logged, on_epoch=True)
        self.log(f"{split}/acc", acc, on_epoch=True, prog_bar=split == "val")
        return acc

    def _denormalize(self, image: Tensor) -> np.ndarray:
        """A normalised (C, H, W) image back to an H x W x C float array in [0, 1]."""
        pre = self.preprocess or {}
        channels = image.shape[0]
        mean = torch.tensor(pre.get("mean", [0.0] * channels), dtype=image.dtype).view(-1, 1, 1)
        std = torch.tensor(pre.get("std", [1.0] * channels), dtype=image.dtype).view(-1, 1, 1)
        return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    # --------------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities (B, num_classes) of a normalised batch."""
        return self(x).float().softmax(dim=-1)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities; ``batch`` is a tensor or a tuple whose first item is the images."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return self.predict_proba(x)

    def merge_adapters(self) -> None:
        """Fold LoRA adapters into the backbone weights (faster inference; the module can no longer save adapters)."""
        if hasattr(self.net, "merge_and_unload"):
            self.net = self.net.merge_and_unload()
            self._eval_module_names = []

    def inference_network(self) -> nn.Module:
        """The plain timm model to run or export (LoRA adapters merged into it first)."""
        self.merge_adapters()
        return self.net

    def save_adapter(self, folder: str, overwrite: bool = False) -> str:
        """Write the LoRA adapters and the head alone (a small peft folder); returns the folder."""
        return str(save_lora_adapter(self.net, folder, overwrite=overwrite))

    # -------------------------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the classes and preprocessing in the checkpoint's run config, so it rebuilds the same model."""
        extra = {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names or []),
            "preprocess": self.preprocess,
        }
        checkpoint.setdefault("hyper_parameters", {}).update(extra)
        run_config = checkpoint.get(RUN_CONFIG_KEY)
        if isinstance(run_config, dict) and isinstance(run_config.get("model"), dict):
            checkpoint[RUN_CONFIG_KEY] = {**run_config, "model": {**run_config["model"], **extra}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Weights come from the checkpoint: do not load pretrained ones over them."""
        self._weights_loaded = True

    # ------------------------------------------------------------------------------------------------ optim
    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: head vs backbone LR, layer-wise LR decay, no decay on norms/biases."""
        model, context = self._optimized()
        return build_optimizer(self.hparams["optimizer"], model, **context).param_groups

    def _optimized(self) -> tuple[nn.Module, dict[str, Any]]:
        """The network the optimizer sees and its context: the timm model itself (under LoRA the base model that
        carries the adapters, so group_matcher() and no_weight_decay() names match) and its head's name."""
        if not any(p.requires_grad for p in self.net.parameters()):
            raise UserError(
                f"finetune={self.strategy} leaves no parameter to train in {self.hparams['backbone']}"
            )
        return self.backbone_model(), {"head": self._head_name}

    def configure_optimizers(self) -> Any:
        """Optimizer over the trainable parameters and a per-step LR schedule from the hparams."""
        model, context = self._optimized()
        return configure_optimization(
            self, model, self.hparams["optimizer"], self.hparams["scheduler"], **context
        )
