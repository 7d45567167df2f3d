"""Knowledge distillation (Hinton et al. 2015) from any classifier checkpoint of this framework.

``python scripts/train.py experiment=digits_small_cnn distill.teacher=RUN/checkpoints/best.ckpt`` (the
``distill`` node of conf/train.yaml; nothing happens while ``teacher`` is null). The teacher is rebuilt from
its checkpoint alone, frozen, kept in eval mode and moved to the student's device when fitting starts; it is
not part of the student (not in its checkpoint, not wrapped by DDP: every process runs its own copy). The
training loss becomes

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * hard-label loss

and ``train/loss_kd``, ``train/loss_hard`` (the two parts) and ``val/kl_teacher`` (KL at T = 1 on the
validation images: how close the student is to its teacher) are logged. The student is any classifier
config; both must have the same classes in the same order and read the same images (a teacher with other
preprocessing, e.g. another input size, would see the student's batches: refused).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from imagelab.callbacks.final_network import build_module_from_data
from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
from imagelab.core.errors import UserError
from lightning_modules.classifier import ClassifierModule


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch (gradients ~ T-independent)."""
    t = float(temperature)
    log_p_student = F.log_softmax(student.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


class Distillation(pl.Callback):
    """Add the KD term of a frozen teacher to a classifier's training loss (see the module docstring).

    Args:
        teacher: a classifier checkpoint written by scripts/train.py (same classes as the student's data).
        temperature: softening T of both distributions (2-8 is usual).
        alpha: weight of the KD part; ``1 - alpha`` goes to the hard-label loss.
    """

    def __init__(self, teacher: str | None, temperature: float = 4.0, alpha: float = 0.5) -> None:
        if not teacher:
            raise UserError(
                "distill.teacher must be a classifier checkpoint (or leave it null: no distillation)"
            )
        self.teacher_path = str(teacher)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        if not self.temperature > 0:
            raise UserError(f"distill.temperature must be > 0, got {temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"distill.alpha must be in [0, 1], got {alpha}")
        self.teacher: Any = None
        self.val_kl = MeanMetric()

    def __deepcopy__(self, memo: dict[int, Any]) -> Distillation:
        """The frozen teacher is shared, never copied (e.g. when the EMA callback copies the student)."""
        return self

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the teacher (fit only) and check it classifies the same classes from the same images."""
        if str(getattr(stage, "value", stage)) != "fit" or self.teacher is not None:
            return
        if not hasattr(pl_module, "loss_terms"):
            raise UserError(f"distill.teacher works with classifiers, not {type(pl_module).__name__}")
        build_module_from_data(pl_module, stage)  # the student reads its classes from the data first
        checkpoint, run_cfg = load_run_checkpoint(self.teacher_path, expected_kind=ClassifierModule)
        # building the teacher initialises a network before its weights load: keep that off the global random
        # stream, so that a run with a teacher draws the same shuffles and dropout masks as one without
        with torch.random.fork_rng(devices=[]):
            teacher = build_module_from_checkpoint(checkpoint, run_cfg)
        if list(teacher.class_names or []) != list(pl_module.class_names or []):
            raise UserError(
                f"the teacher {self.teacher_path} has classes {list(teacher.class_names or [])[:5]}... but the "
                f"student's data has {list(pl_module.class_names or [])[:5]}...: distil on the same classes"
            )
        mine, theirs = dict(pl_module.preprocess or {}), dict(teacher.preprocess or {})
        keys = ("image_size", "channels", "mean", "std")
        if any(mine.get(k) != theirs.get(k) for k in keys):
            raise UserError(
                f"the teacher {self.teacher_path} reads its images differently "
                f"({ {k: theirs.get(k) for k in keys} }) from the student ({ {k: mine.get(k) for k in keys} }): "
                "use the same data.image_size / normalisation for both"
            )
        teacher.merge_adapters()
        teacher.requires_grad_(False)
        self.teacher = teacher.eval()
        pl_module.loss_terms.append(self)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put the teacher and the metric on the student's device (the strategy has placed the student now)."""
        if self.teacher is not None:
            self.teacher.to(pl_module.device).eval()
            self.val_kl.to(pl_module.device)

    def teacher_logits(self, x: Tensor) -> Tensor:
        """The frozen teacher's logits of a batch (no gradients, eval mode)."""
        with torch.no_grad():
            return self.teacher(x).float()

    def __call__(self, module: pl.LightningModule, x: Tensor, logits: Tensor, hard_loss: Tensor) -> Tensor:
        """The student's total loss; logs its KD and hard-label parts."""
        kd = kd_loss(logits, self.teacher_logits(x), self.temperature)
        batch = len(x)
        module.log("train/loss_kd", kd.detach(), on_step=False, on_epoch=True, batch_size=batch)
        module.log("train/loss_hard", hard_loss.detach(), on_step=False, on_epoch=True, batch_size=batch)
        return self.alpha * kd + (1.0 - self.alpha) * hard_loss

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """KL(teacher || student) at T = 1 on the validation batch."""
        if self.teacher is None or trainer.sanity_checking:
            return
        x = batch[0]
        with torch.no_grad():
            kl = kd_loss(pl_module(x), self.teacher_logits(x), 1.0)
        self.val_kl.update(kl, weight=len(x))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log ``val/kl_teacher`` (synchronised across processes by torchmetrics)."""
        if self.val_kl.update_count:
            pl_module.log("val/kl_teacher", self.val_kl.compute())
            self.val_kl.reset()
