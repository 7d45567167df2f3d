"""Test-time augmentation (TTA) and ensembles as drop-in networks: average predictions of transformed inputs
or of several networks, with the same input and output conventions as the network they replace.

* Denoisers (``kind="denoiser"``): outputs are images; each transformed input's output is mapped back with
  the exact inverse transform and the results are averaged. ``x8`` is the "self-ensemble" of DnCNN+/EDSR+
  (the 8 rotations/flips of the dihedral group), ``flip`` the identity and the horizontal flip.
* Classifiers (``kind="classifier"``): outputs are logits; the class probabilities are averaged and returned
  as log-probabilities, which are valid logits (softmax gives back the averaged probabilities, and the
  cross-entropy on them is the ensemble's loss). ``flip`` is the horizontal flip (the usual classifier TTA);
  ``x8`` is allowed for rotation-invariant data (aerial, microscopy), not for digits or everyday photos.

``scripts/eval.py tta=x8``, ``scripts/denoise.py tta=x8``, ``scripts/predict.py tta=flip`` wrap the
checkpoint's ``module.net`` with :func:`wrap_tta`; ensembles (``ckpt_path=[a,b,c]``) use :class:`AverageNet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from imagelab.core.errors import UserError

TTA_MODES = ("none", "flip", "x8")
KINDS = ("denoiser", "classifier")


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


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def average_outputs(outputs: Sequence[Tensor], kind: str) -> Tensor:
    """Mean of denoised images, or log of the mean class probabilities of logits (see module docstring)."""
    _check_kind(kind)
    if kind == "denoiser":
        return torch.stack([o.float() for o in outputs]).mean(dim=0)
    probs = torch.stack([o.float().softmax(dim=-1) for o in outputs]).mean(dim=0)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class TTANet(nn.Module):
    """``net`` applied to the transformed inputs of ``mode``; the (inverse-transformed) outputs averaged."""

    def __init__(self, net: nn.Module, mode: str, kind: str) -> None:
        super().__init__()
        _check_kind(kind)
        self.net = net
        self.mode = mode
        self.kind = kind
        self.transforms = transforms_of(mode)
        self.channels = getattr(net, "channels", None)

    def forward(self, x: Tensor) -> Tensor:
        """Averaged output of ``x`` (images for denoisers, log-probabilities for classifiers)."""
        if self.transforms == [0]:
            return self.net(x)
        outputs = []
        for k in self.transforms:
            out = self.net(dihedral(x, k))
            outputs.append(inverse_dihedral(out, k) if self.kind == "denoiser" else out)
        return average_outputs(outputs, self.kind)


class AverageNet(nn.Module):
    """An ensemble of networks with the same inputs and outputs: their average (see :func:`average_outputs`)."""

    def __init__(self, nets: Sequence[nn.Module], kind: str) -> None:
        super().__init__()
        _check_kind(kind)
        if not nets:
            raise ValueError("an ensemble needs at least one network")
        self.members = nn.ModuleList(nets)
        self.kind = kind
        self.channels = getattr(nets[0], "channels", None)

    def forward(self, x: Tensor) -> Tensor:
        """Averaged output of every member on ``x``."""
        if len(self.members) == 1:
            return self.members[0](x)
        outputs = [m(x) for m in self.members]
        if self.kind == "denoiser":  # outputs are used clamped: average what each member would give
            outputs = [o.float().clamp(0.0, 1.0) for o in outputs]
        return average_outputs(outputs, self.kind)


def wrap_tta(module: nn.Module, mode: str, kind: str) -> nn.Module:
    """Replace ``module.net`` (a LightningModule's network) by its TTA version; ``none`` leaves it alone."""
    if transforms_of(mode) != [0]:
        module.net = TTANet(module.net, mode, kind)
    return module


def average_into(modules: Sequence[nn.Module], kind: str) -> nn.Module:
    """The first module with its ``net`` replaced by the ensemble of every module's ``net``."""
    first = modules[0]
    if len(modules) > 1:
        first.net = AverageNet([m.net for m in modules], kind)
    return first
