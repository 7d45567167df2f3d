"""Test-time augmentation (TTA) and ensembles as drop-in networks: average predictions of transformed inputs
or of several networks, with the same input and output conventions as the network they replace.

How outputs are averaged depends on what they are; the task kind (``imagelab.kinds``) chooses one of:

* :class:`ImageOutputs` (denoisers): outputs are images; each transformed input's output is mapped back with
  the exact inverse transform and the results are averaged. ``x8`` is the "self-ensemble" of DnCNN+/EDSR+
  (the 8 rotations/flips of the dihedral group), ``flip`` the identity and the horizontal flip.
* :class:`LogitOutputs` (classifiers): outputs are logits; the class probabilities are averaged and returned
  as log-probabilities, which are valid logits (softmax gives back the averaged probabilities, and the
  cross-entropy on them is the ensemble's loss). ``flip`` is the horizontal flip (the usual classifier TTA);
  ``x8`` is allowed for rotation-invariant data (aerial, microscopy), not for digits or everyday photos.

Any object with the three methods of :class:`OutputAveraging` works the same way (a user's task kind).
``scripts/eval.py tta=x8``, ``scripts/denoise.py tta=x8``, ``scripts/predict.py tta=flip`` wrap the
checkpoint's ``module.net`` with :func:`wrap_tta`; ensembles (``ckpt_path=[a,b,c]``) use :class:`AverageNet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from imagelab.core.errors import UserError

TTA_MODES = ("none", "flip", "x8")


def dihedral(x: Tensor, k: int) -> Tensor:
    """Transform ``k`` (0-7) of the dihedral group on the last two dims: ``k % 4`` quarter turns, then a
    horizontal flip when ``k >= 4``. ``k = 0`` is the identity, ``k = 4`` the plain horizontal flip."""
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def inverse_dihedral(y: Tensor, k: int) -> Tensor:
    """The exact inverse of :func:`dihedral` ``(., k)``: undo the flip, then turn back."""
    x = torch.flip(y, dims=(-1,)) if k >= 4 else y
    return torch.rot90(x, -(k % 4), dims=(-2, -1)) if k % 4 else x


def transforms_of(mode: str) -> list[int]:
    """The dihedral indices a TTA mode averages over (``none`` = the identity only)."""
    if mode not in TTA_MODES:
        raise UserError(f"tta={mode!r} is not a TTA mode: use tta={'|'.join(TTA_MODES)}")
    return {"none": [0], "flip": [0, 4], "x8": list(range(8))}[mode]


class OutputAveraging(Protocol):
    """How the outputs of transformed inputs or of ensemble members are brought together."""

    def undo_transform(self, output: Tensor, k: int) -> Tensor:
        """The output of the input under dihedral transform ``k`` (0-7), mapped back to the original input."""
        ...

    def member_output(self, output: Tensor) -> Tensor:
        """What one ensemble member contributes to the average (e.g. its output as it is used, clamped)."""
        ...

    def average(self, outputs: Sequence[Tensor]) -> Tensor:
        """The combined output of several outputs of the same input."""
        ...


class ImageOutputs:
    """Image outputs (denoisers): transforms undone, members clamped to [0, 1] as used, the mean taken."""

    def undo_transform(self, output: Tensor, k: int) -> Tensor:
        """``output`` turned and flipped back (:func:`inverse_dihedral`)."""
        return inverse_dihedral(output, k)

    def member_output(self, output: Tensor) -> Tensor:
        """The member's image as it is used: float, clamped to [0, 1]."""
        return output.float().clamp(0.0, 1.0)

    def average(self, outputs: Sequence[Tensor]) -> Tensor:
        """Mean image."""
        return torch.stack([o.float() for o in outputs]).mean(dim=0)


class LogitOutputs:
    """Logit outputs (classifiers): transform-invariant, averaged as probabilities (see the module docstring)."""

    def undo_transform(self, output: Tensor, k: int) -> Tensor:
        """Logits do not move with the image: unchanged."""
        return output

    def member_output(self, output: Tensor) -> Tensor:
        """The member's logits, unchanged."""
        return output

    def average(self, outputs: Sequence[Tensor]) -> Tensor:
        """Log of the mean class probabilities."""
        probs = torch.stack([o.float().softmax(dim=-1) for o in outputs]).mean(dim=0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class TTANet(nn.Module):
    """``net`` applied to the transformed inputs of ``mode``; the (inverse-transformed) outputs averaged."""

    def __init__(self, net: nn.Module, mode: str, outputs: OutputAveraging) -> None:
        super().__init__()
        self.net = net
        self.mode = mode
        self.outputs = outputs
        self.transforms = transforms_of(mode)
        self.channels = getattr(net, "channels", None)

    def forward(self, x: Tensor) -> Tensor:
        """Averaged output of ``x`` (images for denoisers, log-probabilities for classifiers)."""
        if self.transforms == [0]:
            return self.net(x)
        outputs = [self.outputs.undo_transform(self.net(dihedral(x, k)), k) for k in self.transforms]
        return self.outputs.average(outputs)


class AverageNet(nn.Module):
    """An ensemble of networks with the same inputs and outputs: their average (see :func:`average_outputs`)."""

    def __init__(self, nets: Sequence[nn.Module], outputs: OutputAveraging) -> None:
        super().__init__()
        if not nets:
            raise ValueError("an ensemble needs at least one network")
        self.members = nn.ModuleList(nets)
        self.outputs = outputs
        self.channels = getattr(nets[0], "channels", None)

    def forward(self, x: Tensor) -> Tensor:
        """Averaged output of every member on ``x``."""
        if len(self.members) == 1:
            return self.members[0](x)
        return self.outputs.average([self.outputs.member_output(m(x)) for m in self.members])


def wrap_tta(module: nn.Module, mode: str, outputs: OutputAveraging) -> nn.Module:
    """Replace ``module.net`` (a LightningModule's network) by its TTA version; ``none`` leaves it alone."""
    if transforms_of(mode) != [0]:
        module.net = TTANet(module.net, mode, outputs)
    return module


def average_into(modules: Sequence[nn.Module], outputs: OutputAveraging) -> nn.Module:
    """The first module with its ``net`` replaced by the ensemble of every module's ``net``."""
    first = modules[0]
    if len(modules) > 1:
        first.net = AverageNet([m.net for m in modules], outputs)
    return first
