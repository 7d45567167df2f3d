"""timm backbones for the classifier: any timm model by name, its pretrained weights, or weights from a file.

* ``create_backbone`` builds a timm model without downloading anything (unknown names and options become
  one-line UserErrors with suggestions).
* ``create_pretrained_backbone`` loads timm's pretrained weights: from the local Hugging Face / torch-hub cache
  when they are there (no network needed), else from the hub. In Hugging Face's offline mode
  (``HF_HUB_OFFLINE=1``) missing weights are a one-line UserError at once; a failed download (huggingface_hub's
  ``LocalEntryNotFoundError`` after its retries, or any other error) is one too.
* ``read_weights_file`` + ``load_backbone_weights`` load a local file: a timm/torch state dict (``.pth``,
  ``.pt``, ``.bin``, ``.safetensors``, also nested under ``state_dict``/``model``) or a checkpoint written by
  this project's ``scripts/train.py`` (LoRA adapters merged). A head of another size is re-initialised.
* ``small_cnn`` is a small VGG-style CNN for 32 px images, registered as a timm model so that
  ``model.backbone=small_cnn`` works like any other timm name.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from omegaconf import OmegaConf
from safetensors.torch import load_file
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from torch import nn

from imagelab.config.kind_registry import model_class
from imagelab.config.run_checkpoint import build_module_from_checkpoint, model_kind
from imagelab.core.constants import RUN_CONFIG_KEY
from imagelab.core.errors import UserError, first_line

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
PRETRAINED_REMEDY = (
    "run once online to cache them (HF_HUB_OFFLINE=0), or start from a local file with "
    "model.checkpoint_path=FILE, or train from scratch with model.pretrained=false"
)


# ------------------------------------------------------------------------------------------ small CNN


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """VGG-style CNN for small images (CIFAR-10, digits) trained from scratch.

    A stem conv, then one stage per entry of ``widths`` (two 3x3 conv-BN-ReLU and a 2x max-pool), global
    average pooling, dropout ``drop_rate`` and a linear head: about 0.3 M parameters at widths 32-64-128.
    Implements the timm model interface the framework uses (``get_classifier``, ``reset_classifier``,
    ``group_matcher``, ``forward_features``, ``forward_head``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        drop_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        kwargs.pop("drop_path_rate", None)  # no residual branches to drop
        if kwargs:
            raise TypeError(f"small_cnn got unexpected options {sorted(kwargs)}")
        widths = [int(w) for w in widths]
        self.num_classes = int(num_classes)
        self.num_features = widths[-1]
        self.drop_rate = float(drop_rate)
        self.stem = _conv_bn_relu(in_chans, widths[0])
        stages, cin = [], widths[0]
        for width in widths:
            stages.append(
                nn.Sequential(_conv_bn_relu(cin, width), _conv_bn_relu(width, width), nn.MaxPool2d(2))
            )
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups for partial fine-tuning and layer-wise LR decay: stem, then stages (or convs)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        """The classification head."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a new one for ``num_classes`` classes (0 = no head)."""
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before pooling."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and (unless ``pre_logits``) the linear head."""
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, C, H, W) batch."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "small_cnn": {
            "num_classes": 10,
            "input_size": (3, 32, 32),
            "pool_size": (4, 4),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": CIFAR10_MEAN,
            "std": CIFAR10_STD,
            "first_conv": "stem.0",
            "classifier": "head",
        }
    }
)


@register_model
def small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """timm entry point of ``SmallCNN`` (no pretrained weights exist)."""
    return build_model_with_cfg(SmallCNN, "small_cnn", pretrained, **kwargs)


# ------------------------------------------------------------------------------------------ creation


def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else "list names with python -c \"import timm; print(timm.list_models('resnet*'))\""
    )
    return f"model.backbone={name!r} is not a timm model: {hint}"


def create_backbone(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
    pretrained: bool = False,
    timm_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Create the timm model ``name`` with ``num_classes`` outputs (0 = no head), optionally pretrained.

    ``drop_path_rate=None`` leaves the model's default; ``timm_kwargs`` go to ``timm.create_model`` as is
    (e.g. ``img_size`` for a ViT). With ``pretrained`` see ``create_pretrained_backbone``.
    """
    if not name.startswith(("hf-hub:", "local-dir:")) and not timm.is_model(name):
        raise UserError(_unknown_model_message(name))
    kwargs = dict(
        num_classes=int(num_classes),
        in_chans=int(in_chans),
        drop_rate=float(drop_rate),
        drop_path_rate=None if drop_path_rate is None else float(drop_path_rate),
        **dict(timm_kwargs or {}),
    )
    if pretrained:
        return create_pretrained_backbone(name, **kwargs)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise UserError(
            f"timm model {name!r} rejected an option ({exc}); remove it from model.timm_kwargs "
            "(or set model.drop_path_rate=null)"
        ) from None


def _pretrained_cfg(name: str) -> Any:
    if name.startswith(("hf-hub:", "local-dir:")):
        return None
    try:
        return get_pretrained_cfg(name)
    except RuntimeError:
        return None


def cached_weights_file(pretrained_cfg: Any) -> Path | None:
    """The local file of a timm pretrained config's weights (Hugging Face or torch-hub cache), if cached."""
    if pretrained_cfg is None:
        return None
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    if hub_id:
        filename = getattr(pretrained_cfg, "hf_hub_filename", None)
        for fname in [filename] if filename else ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo_id=hub_id, filename=fname)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = getattr(pretrained_cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if candidate.is_file():
            return candidate
    return None


def create_pretrained_backbone(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` that fails with one clear line without weights.

    Cached weights are used without touching the network. Otherwise, in Hugging Face's offline mode
    (``HF_HUB_OFFLINE=1``) a UserError comes at once; online, timm downloads them, and a failed download
    (huggingface_hub retries an unreachable hub for about 45 s first) is a UserError saying how to proceed.
    """
    cfg = _pretrained_cfg(name)
    if cfg is not None and not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise UserError(
            f"timm has no pretrained weights for {name!r}: set model.pretrained=false (train from scratch) "
            "or pick a name from timm.list_pretrained()"
        )
    cached = cached_weights_file(cfg)
    if cached is not None:
        log.info("pretrained weights of %s from the local cache %s", name, cached)
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs
        )
    if is_offline_mode():
        raise UserError(
            f"model.pretrained=true: timm's weights for {name!r} are not cached and HF_HUB_OFFLINE=1; "
            f"{PRETRAINED_REMEDY}"
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise UserError(
            f"model.pretrained=true: timm's weights for {name!r} are not cached and the Hugging Face hub cannot "
            f"be reached ({first_line(exc, 120)}); {PRETRAINED_REMEDY}"
        ) from None
    except Exception as exc:  # network, HTTP and file errors come in many types
        raise UserError(
            f"downloading timm's pretrained weights for {name!r} failed ({first_line(exc, 200)}); "
            f"{PRETRAINED_REMEDY}"
        ) from None


# ------------------------------------------------------------------------------------------ heads


def head_module_name(model: nn.Module) -> str:
    """Dotted name of the classification head of a timm model (e.g. ``head``, ``fc``, ``head.fc``)."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if not isinstance(head, nn.Identity):
            for name, module in model.named_modules():
                if module is head and name:
                    return name
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(name, (list, tuple)):
        name = name[0]
    if not name:
        raise UserError(
            f"cannot find the classification head of {type(model).__name__}; use another timm model"
        )
    return str(name)


def reset_head(model: nn.Module, num_classes: int) -> None:
    """Give ``model`` a freshly initialised head for ``num_classes`` classes (timm ``reset_classifier``)."""
    reset = getattr(model, "reset_classifier", None)
    if not callable(reset):
        raise UserError(f"{type(model).__name__} has no reset_classifier(); use a timm model")
    reset(int(num_classes))


# ------------------------------------------------------------------------------------------ weight files


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local weights file into a flat ``{name: tensor}`` state dict of a timm model.

    Accepts safetensors files, torch files holding a state dict (possibly under ``state_dict``,
    ``state_dict_ema``, ``model_ema`` or ``model``; ``module.`` prefixes of DDP are removed), and this
    project's classifier checkpoints (their backbone, with LoRA adapters merged, and their head).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(
            f"model.checkpoint_path={file} does not exist: give a timm/torch weights file (.pth, .pt, .bin, "
            ".safetensors) or a checkpoint from a run's checkpoints/ folder"
        )
    try:
        if file.suffix == ".safetensors":
            data: Any = load_file(str(file), device="cpu")
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors
        raise UserError(f"cannot read weights file {file}: {first_line(exc, 160)}") from None
    if isinstance(data, dict) and "state_dict" in data and RUN_CONFIG_KEY in data:
        return _project_checkpoint_weights(data, file)
    if isinstance(data, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(
            f"{file} does not hold a state dict of tensors: save one with torch.save(model.state_dict())"
        )
    return _strip_prefix(dict(data), "module.")


def _project_checkpoint_weights(checkpoint: dict[str, Any], file: Path) -> dict[str, torch.Tensor]:
    """The timm model weights (LoRA merged) of a classifier checkpoint written by scripts/train.py."""
    run_cfg = OmegaConf.create(checkpoint[RUN_CONFIG_KEY])
    if not hasattr(model_class(run_cfg), "inference_network"):  # a classifier's timm network with LoRA merged
        raise UserError(
            f"model.checkpoint_path={file} holds a {model_kind(run_cfg)} model; give a classifier checkpoint or "
            "weights file"
        )
    module = build_module_from_checkpoint(checkpoint, run_cfg)
    return {k: v.detach().clone() for k, v in module.inference_network().state_dict().items()}


def load_backbone_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> str:
    """Copy ``state`` into ``model`` (a plain timm model); returns a one-line summary of what was loaded.

    The head is loaded only when its shape fits (else it keeps its fresh initialisation: a new head of
    another size). Every other tensor of the model must be present with the same shape (UserError if not).
    """
    own = model.state_dict()
    head = head_module_name(model) + "."
    loadable: dict[str, torch.Tensor] = {}
    head_skipped = False
    for key, value in state.items():
        if key not in own:
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            if key.startswith(head):
                head_skipped = True
                continue
            raise UserError(
                f"weights in {source} do not fit this backbone: {key} is {tuple(value.shape)} there but "
                f"{tuple(own[key].shape)} here; set model.backbone (and data.channels) to what it was trained with"
            )
        loadable[key] = value
    missing = [
        k
        for k in own
        if k not in loadable and not k.startswith(head) and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise UserError(
            f"weights in {source} lack {len(missing)} of this backbone's {len(own)} tensors (e.g. {missing[0]}): "
            "they belong to another architecture; set model.backbone to the one they were trained with"
        )
    model.load_state_dict(loadable, strict=False)
    head_keys = [k for k in own if k.startswith(head)]
    head_loaded = bool(head_keys) and all(k in loadable for k in head_keys)
    unused = len([k for k in state if k not in own])
    what = (
        "with its head"
        if head_loaded
        else ("head re-initialised (other size)" if head_skipped else "new head")
    )
    return f"loaded {len(loadable)} tensors from {source}, {what}" + (f", {unused} unused" if unused else "")
