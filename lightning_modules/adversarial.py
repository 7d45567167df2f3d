"""Adversarial examples (FGSM, PGD; L-inf or L2) for classifiers, adversarial training and robust accuracy.

Attacks work in pixel space, on images in [0, 1] *before* the normalisation the model expects: a batch of
normalised images ``x`` is mapped to ``x * std + mean``, perturbed within the ``eps`` ball (and the [0, 1]
box), and normalised again. So ``eps = 8/255`` means 8 grey levels whatever the backbone's mean and std.

* :func:`attack_batch`: the adversarial version of a normalised batch (the model's cross-entropy is
  increased by ``steps`` signed-gradient (L-inf) or normalised-gradient (L2) steps of size ``alpha``, from the
  clean image or a random point of the ball, projected back after each step). FGSM = one step of size ``eps``.
* :class:`RobustAccuracy`: a callback logging ``val/acc_<attack>`` and ``test/acc_<attack>`` for each
  attack (gradients are switched back on inside Lightning's inference mode for the attack only).
* :class:`AdversarialTraining`: ``adversarial=fgsm|pgd`` (conf/adversarial/). Replaces a share of every
  training batch by its adversarial version before the training step (Madry et al. 2018; with ``share``
  0.5 the loss mixes clean and adversarial examples as in Goodfellow et al. 2015), and logs robust accuracy.

The attacker computes gradients with respect to the input only (``torch.autograd.grad``), with the network in
eval mode (batch-norm statistics untouched) and through the bare LightningModule, never the DDP wrapper: no
gradient reaches the parameters and no collective is started, so it composes with DDP, gradient
accumulation and the fine-tuning strategies (frozen parts stay frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from imagelab.config.instantiation import build_instance
from imagelab.core.errors import UserError

NORMS = ("Linf", "L2")


@dataclass(frozen=True)
class Attack:
    """An attack within the ``eps`` ball (``norm`` Linf|L2, pixel scale [0, 1]): :class:`FGSM` or :class:`PGD`.

    ``conf/attack/*.yaml`` name the class with ``_target_``; a plain mapping with ``name: fgsm|pgd`` (the
    ``callbacks.adversarial.attack`` node) is read by :meth:`from_config`. ``alpha`` and ``steps`` are PGD's.
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    norm: str = "Linf"
    name: ClassVar[str] = "attack"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise UserError(f"attack norm must be Linf or L2, got {self.norm!r}")
        if not float(self.eps) > 0:
            raise UserError(
                f"attack eps must be > 0 (pixel scale [0, 1], e.g. 8/255 = 0.0314), got {self.eps}"
            )

    def schedule(self) -> tuple[int, float]:
        """(number of steps, step size) of the attack."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it steps")

    @property
    def key(self) -> str:
        """Metric suffix: ``fgsm`` or ``pgd`` (``val/acc_pgd``)."""
        return self.name

    @property
    def label(self) -> str:
        """Readable name with its strength, e.g. ``PGD-20 (Linf, eps 0.0314)``."""
        return f"{self.name.upper()} ({self.norm}, eps {self.eps:.4g})"

    @classmethod
    def from_config(cls, cfg: Attack | Mapping[str, Any]) -> Attack:
        """An attack from an instance, a ``_target_`` node, or a mapping with ``name`` and the field names
        (unknown keys and names are a UserError)."""
        if isinstance(cfg, Attack):
            return cfg
        cfg = dict(cfg)
        if "_target_" in cfg:
            return build_instance(cfg, Attack, "attack")
        name = cfg.pop("name", "pgd")
        chosen = ATTACKS.get(str(name))
        if chosen is None:
            raise UserError(f"attack name must be {' or '.join(ATTACKS)}, got {name!r}")
        unknown = sorted(set(cfg) - set(chosen.__dataclass_fields__))
        if unknown:
            valid = sorted({*chosen.__dataclass_fields__, "name"})
            raise UserError(f"unknown attack option(s) {unknown}; valid: {valid}")
        kwargs: dict[str, Any] = {}
        for key, cast in (("eps", float), ("alpha", float), ("steps", int), ("norm", str)):
            if cfg.get(key) is not None:
                kwargs[key] = cast(cfg[key])
        if cfg.get("random_start") is not None:
            kwargs["random_start"] = bool(cfg["random_start"])
        return chosen(**kwargs)


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast gradient sign method: one step of size ``eps`` (``alpha`` and ``steps`` are not used)."""

    name: ClassVar[str] = "fgsm"

    def schedule(self) -> tuple[int, float]:
        """One step of size ``eps``."""
        return 1, float(self.eps)

    @property
    def label(self) -> str:
        """E.g. ``FGSM (Linf, eps 0.0314)``."""
        return f"FGSM ({self.norm}, eps {self.eps:.4g})"


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent: ``steps`` steps of size ``alpha``, projected back into the ball after each."""

    name: ClassVar[str] = "pgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.steps) < 1 or not float(self.alpha) > 0:
            raise UserError(f"pgd needs steps >= 1 and alpha > 0, got steps={self.steps} alpha={self.alpha}")

    def schedule(self) -> tuple[int, float]:
        """``steps`` steps of size ``alpha``."""
        return int(self.steps), float(self.alpha)

    @property
    def label(self) -> str:
        """E.g. ``PGD-20 (Linf, eps 0.0314)``."""
        return f"PGD-{self.steps} ({self.norm}, eps {self.eps:.4g})"


ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD}
"""The attacks a plain ``name: ...`` mapping may choose (``callbacks.adversarial.attack``)."""


def _loss(logits: Tensor, target: Tensor) -> Tensor:
    """Summed cross-entropy with hard (B,) or soft (B, K) targets (sum: the step size does not depend on B)."""
    if target.ndim == 2:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1))
    return F.cross_entropy(logits.float(), target, reduction="sum")


def _per_image_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    return delta * torch.clamp(eps / _per_image_norm(delta), max=1.0)


def _random_start(pixels: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "Linf":
        return torch.empty_like(pixels).uniform_(-eps, eps)
    direction = torch.randn_like(pixels)
    radius = eps * torch.rand(pixels.shape[0], device=pixels.device).view(-1, *([1] * (pixels.ndim - 1)))
    return direction / _per_image_norm(direction) * radius


def attack_batch(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    attack: Attack,
    mean: Tensor,
    std: Tensor,
) -> Tensor:
    """The adversarial version of the normalised batch ``x`` (labels ``y``) against ``model`` (logits).

    ``mean``/``std`` are the normalisation (broadcastable to ``x``, e.g. (C, 1, 1)); the perturbation lives in
    pixel space [0, 1]. Returns a detached normalised batch; ``model``'s parameter gradients are untouched.
    """
    x = x.detach()
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # a normal tensor even when Lightning's inference mode made the batch
        y = y.clone()
        mean, std = mean.to(x).clone(), std.to(x).clone()
        pixels = (x * std + mean).clamp(0.0, 1.0)
        steps, size = attack.schedule()
        delta = torch.zeros_like(pixels)
        if attack.random_start:
            delta = _random_start(pixels, attack.eps, attack.norm)
            delta = (pixels + delta).clamp(0.0, 1.0) - pixels
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = _loss(model((pixels + delta - mean) / std), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if attack.norm == "Linf":
                    delta = delta + size * grad.sign()
                else:
                    delta = delta + size * grad / _per_image_norm(grad)
                delta = _project(delta, attack.eps, attack.norm)
                delta = (pixels + delta).clamp(0.0, 1.0) - pixels
        return ((pixels + delta.detach() - mean) / std).detach()


def normalisation(pl_module: Any, channels: int) -> tuple[Tensor, Tensor]:
    """(mean, std) as (C, 1, 1) tensors from the classifier's preprocessing (0 and 1 when it has none)."""
    pre = getattr(pl_module, "preprocess", None) or {}
    mean = torch.tensor(pre.get("mean") or [0.0] * channels, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(pre.get("std") or [1.0] * channels, dtype=torch.float32).view(-1, 1, 1)
    return mean, std


def attack_module(pl_module: Any, x: Tensor, y: Tensor, attack: Attack) -> Tensor:
    """:func:`attack_batch` against a LightningModule, in eval mode (its train/eval mode is restored)."""
    was_training = pl_module.training
    pl_module.eval()
    try:
        mean, std = normalisation(pl_module, x.shape[1])
        return attack_batch(pl_module, x, y, attack, mean, std)
    finally:
        if was_training:
            pl_module.train()


class RobustAccuracy(pl.Callback):
    """Log ``val/acc_<name>`` / ``test/acc_<name>``: accuracy on each validation/test batch after ``attacks``.

    ``attacks`` maps names to attacks (or their configs, see :meth:`Attack.from_config`). ``splits`` chooses where (``val``,
    ``test``). Accuracy is a torchmetrics weighted mean: exact under DDP with uneven shards.
    """

    def __init__(
        self, attacks: Mapping[str, Attack | Mapping[str, Any]], splits: tuple[str, ...] = ("val", "test")
    ) -> None:
        self.attacks = {str(k): Attack.from_config(v) for k, v in dict(attacks).items()}
        self.splits = tuple(splits)
        self._metrics: dict[str, Any] = {}

    def _metric(self, split: str, name: str, device: torch.device) -> Any:
        key = f"{split}/acc_{name}"
        if key not in self._metrics:
            self._metrics[key] = MeanMetric().to(device)
        return self._metrics[key]

    def _update(self, split: str, pl_module: pl.LightningModule, batch: Any) -> None:
        if split not in self.splits or not self.attacks:
            return
        if getattr(pl_module.trainer, "sanity_checking", False):
            return
        x, y = batch[0], batch[1]
        for name, attack in self.attacks.items():
            x_adv = attack_module(pl_module, x, y, attack)
            with torch.no_grad():
                correct = (pl_module(x_adv).argmax(dim=-1) == y).float()
            self._metric(split, name, x.device).update(correct)

    def _log(self, split: str, pl_module: pl.LightningModule) -> None:
        for key, metric in list(self._metrics.items()):
            if key.startswith(f"{split}/") and metric.update_count:
                pl_module.log(key, metric.compute(), sync_dist=False)  # already synced by torchmetrics
                metric.reset()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Attack the validation batch and count the examples still classified correctly."""
        self._update("val", pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log ``val/acc_<name>``."""
        self._log("val", pl_module)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Attack the test batch and count the examples still classified correctly."""
        self._update("test", pl_module, batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log ``test/acc_<name>``."""
        self._log("test", pl_module)


class AdversarialTraining(RobustAccuracy):
    """Train on adversarial examples: ``share`` of every training batch is replaced by its attacked version.

    Args:
        attack: the training attack (:class:`Attack` fields: name fgsm|pgd, eps, alpha, steps, random_start,
            norm Linf|L2; eps/alpha on the [0, 1] pixel scale).
        share: fraction of each batch attacked (1.0 = all, 0.5 = half clean, half adversarial).
        evaluate: also log ``val/acc_<attack>`` and ``test/acc_<attack>`` with the same attack.
    """

    def __init__(self, attack: Attack | Mapping[str, Any], share: float = 1.0, evaluate: bool = True) -> None:
        chosen = Attack.from_config(attack)
        super().__init__({chosen.key: chosen} if evaluate else {})
        self.attack = chosen
        self.share = float(share)
        if not 0.0 < self.share <= 1.0:
            raise UserError(f"callbacks.adversarial.share must be in (0, 1], got {share}")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Overwrite the first ``share`` of the batch's images, in place, by their adversarial versions.

        Lightning hands this hook the batch object that ``training_step`` then receives (after the device
        transfer and mixup); every datamodule here makes a fresh image tensor per batch, so no data is altered.
        """
        x, y = batch[0], batch[1]
        count = max(1, round(self.share * x.shape[0]))
        x_adv = attack_module(pl_module, x[:count], y[:count], self.attack)
        with torch.no_grad():
            x[:count] = x_adv.to(x.dtype)
