"""LightningModule that fine-tunes (or trains from scratch) any timm model as an image classifier.

The network is built by ``classifier_net.ClassifierNet``: shape-only at construction when the classes are not
given, then in ``setup()`` from the datamodule's ``data_config()`` (classes, preprocessing), which travel with
every checkpoint (``config_from_data``). Pretrained or file weights are loaded when fitting starts, never when
a checkpoint is re-opened. Loss, metrics and test-time figures: ``classifier_scoring``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from imagelab.core.errors import UserError
from lightning_modules import classifier_scoring as scoring
from lightning_modules.classifier_net import ClassifierNet, base_model, classes_for_data
from lightning_modules.classifier_options import ClassifierOptions
from lightning_modules.error_gallery import ConfidentErrors
from lightning_modules.finetuning import build_strategy, save_lora_adapter
from lightning_modules.optim import build_optimizer, configure_optimization
from lightning_modules.step_logging import DeviceSum, epoch_mean, log_epoch_loss, should_log_step


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

    def __init__(self, **options: Any) -> None:
        """Build from :class:`~lightning_modules.classifier_options.ClassifierOptions`' keywords."""
        super().__init__()
        opts = ClassifierOptions(**options)
        self.save_hyperparameters(asdict(opts))  # the checkpoint's hyper_parameters: the options' fields
        strategy = build_strategy(opts.finetune)
        self.num_classes: int | None = opts.num_classes
        self.class_names: list[str] | None = opts.class_names
        self.preprocess: dict | None = opts.preprocess
        self.strategy: str = strategy.name
        self._finetune = strategy
        self._builder = ClassifierNet(
            opts.backbone,
            strategy,
            pretrained=opts.pretrained,
            checkpoint_path=opts.checkpoint_path,
            in_chans=opts.in_chans,
            drop_rate=opts.drop_rate,
            drop_path_rate=opts.drop_path_rate,
            timm_kwargs=opts.timm_kwargs,
        )
        self._eval_module_names: list[str] = []
        self._weights_loaded = False
        self._built = False
        self._head_name = ""
        self._bound_stage = ""
        # The architecture is created now (fails fast on a wrong name or option). Without a class count it is a
        # headless shape-only model on the meta device (free to build); the real one is built in setup().
        if self.num_classes:
            self._use_net(self._builder.build(self.num_classes))
        else:
            self.net = self._builder.shape_only()
        self.val_acc_best = MaxMetric()
        self.train_loss = epoch_mean()  # train/loss_epoch, accumulated on the device (step_logging.py)
        # Losses as torchmetrics means: exact under DDP even when processes score different numbers of images
        # (Lightning's sync_dist mean of per-process means is not).
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints so a resumed run remembers its best
        self._misclassified = ConfidentErrors(opts.num_misclassified, self.num_classes or 2)
        # extra training-loss terms added by callbacks: fn(module, x, logits, loss) -> loss (e.g. distillation)
        self.loss_terms: list[Any] = []

    # --------------------------------------------------------------------------------------------- building
    def _use_net(self, net: nn.Module) -> None:
        """Make ``net`` (head sized, strategy applied) the module's network and create the metrics."""
        assert self.num_classes is not None
        self.net = net
        self._head_name = ClassifierNet.head_name(net)
        self._eval_module_names = self._finetune.eval_modules(net)
        # validate_args=False: the label range checks read values back from the device on every step
        self.train_acc = (
            epoch_mean()
        )  # micro accuracy: the epoch's correct predictions / images (step_logging)
        self.val_metrics = scoring.split_metrics(self.num_classes)
        self.test_metrics = scoring.split_metrics(self.num_classes)
        self.test_confusion = MulticlassConfusionMatrix(self.num_classes)
        self._built = True

    def backbone_model(self) -> nn.Module:
        """The timm model inside ``net`` (for LoRA: the base model that carries the adapters)."""
        return base_model(self.net)

    def setup(self, stage: str) -> None:
        """Read the data config of the trainer's datamodule and build the final network (``build_from_data``)."""
        self.build_from_data(stage)

    def build_from_data(self, stage: str) -> None:
        """Size the head from the datamodule's classes, load the initial weights (fit only), keep its preprocessing.

        The data flows one way: the module reads ``self.trainer.datamodule.data_config()``; the datamodule
        knows nothing of the model. Idempotent per stage and datamodule: Lightning sets up callbacks before
        the module, so callbacks that need the final network in their own ``setup`` (channels-last, compile,
        distillation) call it first (``imagelab.callbacks.final_network.build_module_from_data``).
        """
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        key = f"{id(datamodule)}:{stage}"
        if self._bound_stage == key:
            return
        if not self._built:  # storage without initialisation, so the module can still move if building fails
            self.net = self.net.to_empty(device="cpu")
        report = getattr(datamodule, "data_config", None)
        data = report() if callable(report) else {}
        names = [str(n) for n in data.get("class_names") or []]
        self.class_names = classes_for_data(self.class_names, self.num_classes, names)
        self.num_classes = len(self.class_names)
        self.hparams["num_classes"], self.hparams["class_names"] = self.num_classes, list(self.class_names)
        if stage == "fit" and not self._weights_loaded and self._builder.wants_initial_weights:
            self._use_net(self._builder.build(self.num_classes, True))
            self._weights_loaded = True
        elif not self._built:
            self._use_net(self._builder.build(self.num_classes))
        if data.get("preprocess"):
            self.preprocess = self.hparams["preprocess"] = dict(data["preprocess"])
        self._bound_stage = key

    def config_from_data(self) -> dict[str, Any]:
        """The ``model.*`` config values learnt from the data in ``setup`` (classes, preprocessing).

        ``imagelab.callbacks.run_config.RunConfigInCheckpoint`` (the only writer of the checkpoint's run config)
        merges them into its ``model`` node, so the checkpoint rebuilds this very model."""
        return {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names or []),
            "preprocess": self.preprocess,
        }

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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step; logs ``train/loss`` and ``train/acc`` (against the dominant mixed label)."""
        x, y = batch
        logits = self(x)
        loss = scoring.classification_loss(logits, y, self.hparams["label_smoothing"])
        for term in self.loss_terms:  # e.g. knowledge distillation (lightning_modules/distillation.py)
            loss = term(self, x, logits, loss)
        hard = y if y.ndim == 1 else y.argmax(dim=1)
        # epoch values accumulate on the device; step values are logged where a logger can see them
        # (lightning_modules/step_logging.py: each self.log call costs 0.6-0.8 ms of CPU)
        self._train_loss_sum.add(loss.detach() * len(x), len(x))
        self._train_correct.add((logits.detach().argmax(dim=-1) == hard).sum(), len(x))
        if should_log_step(self, batch_idx):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_epoch_start(self) -> None:
        """Start this epoch's on-device sums of the training loss and of the correct predictions."""
        self._train_loss_sum, self._train_correct = DeviceSum(), DeviceSum()

    def on_train_epoch_end(self) -> None:
        """Log ``train/loss_epoch`` and ``train/acc`` (synchronised across processes by torchmetrics)."""
        if not self._train_loss_sum.flush_into(self.train_loss):
            return
        self._train_correct.flush_into(self.train_acc)
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
        self.val_metrics.update(logits.detach(), y)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's metrics (synchronised across processes by torchmetrics) and ``val/acc_best``."""
        log_epoch_loss(self, "val/loss", self.val_loss)
        per_class = self.num_classes <= self.hparams["per_class_max"]
        acc = scoring.log_split(self, "val", self.val_metrics, list(self.class_names or []), per_class)
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def on_test_epoch_start(self) -> None:
        """Start collecting misclassified test images."""
        self._misclassified = ConfidentErrors(self.hparams["num_misclassified"], self.num_classes or 2)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Update the test metrics and the confusion matrix; keep the most confident misclassified images.

        Returns the logits (for callbacks such as ``imagelab.tracking.wandb_tables.PerImageTable``)."""
        x, y = batch
        logits = self(x)
        self.test_loss.update(F.cross_entropy(logits.float(), y), weight=len(y))
        self.test_metrics.update(logits.detach(), y)
        self.test_confusion.update(logits.detach(), y)
        if self.global_rank == 0:
            self._misclassified.offer(x, y, logits)
        return logits

    def on_test_epoch_end(self) -> None:
        """Log test metrics (per-class accuracy for every class), the confusion matrix and misclassified images."""
        log_epoch_loss(self, "test/loss", self.test_loss)
        names = list(self.class_names or [])
        scoring.log_split(self, "test", self.test_metrics, names, per_class=True)
        matrix = self.test_confusion.compute().cpu().numpy()
        self.test_confusion.reset()
        if self.global_rank == 0 and self._trainer is not None and self.trainer.loggers:
            scoring.log_test_figures(self.trainer, matrix, names, self._misclassified, self.preprocess)

    def _denormalize(self, image: Tensor) -> np.ndarray:
        """A normalised (C, H, W) image back to an H x W x C float array in [0, 1]."""
        return scoring.denormalize(image, self.preprocess)

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
