"""Open a checkpoint written by this framework: its weights, the run config it carries, and what model it is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imagelab.config.instantiation import instantiate_node
from imagelab.config.kind_registry import kind_name, model_class, registered_kind
from imagelab.core.constants import HYDRA_DIR, RUN_CONFIG_KEY
from imagelab.core.errors import UserError, first_line


def model_kind(run_config: dict[str, Any] | DictConfig) -> str:
    """The name of the model's task kind (``denoiser``, ``classifier``, a user's), else its ``_target_``.

    Kinds are registered by class (``imagelab.config.kind_registry``); the built-in ones by ``imagelab.kinds``.
    """
    kind = registered_kind(model_class(run_config))
    if kind is not None:
        return str(kind.name)
    return str(run_config.get("model", {}).get("_target_", "?"))


def _check_kind(ckpt_path: Path, cfg: DictConfig, expected: str | type) -> None:
    """UserError unless the checkpoint's model is of task kind ``expected`` (a kind name or a module class)."""
    found_class = model_class(cfg)
    if isinstance(expected, type):
        ok, wanted = found_class is not None and issubclass(found_class, expected), kind_name(expected)
    else:
        ok, wanted = model_kind(cfg) == expected, expected
    if not ok:
        hint = getattr(registered_kind(found_class), "scripts", "the script for that model")
        raise UserError(f"{ckpt_path} holds a {model_kind(cfg)} model, not a {wanted}: use {hint}")


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """One whole sentence on why ``torch.load(path, weights_only=True)`` failed."""
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (e.g. {found.group(1)})" if found else ""
        return (
            f"refused to load {path}: it holds pickled Python objects{what} besides tensors and plain data, "
            "and unpickling them can run arbitrary code; load only checkpoints written by scripts/train.py, "
            "or re-save this one's state_dict with torch.save if you trust its source"
        )
    if isinstance(exc, EOFError) or "PytorchStreamReader" in text or "zip archive" in text:
        return f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint"
    return f"cannot read checkpoint {path}: {first_line(exc, 200)}"


def check_resumable_checkpoint(path: str | Path, cfg: DictConfig) -> None:
    """Check, before training starts, that ``path`` is a full-state checkpoint of the same kind of model."""
    checkpoint, _ = load_run_checkpoint(path, expected_kind=model_kind(cfg))
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise UserError(
            f"{path} holds weights only, not a training state to resume: start from its weights with "
            "model.checkpoint_path=... instead of ckpt_path=..."
        )


def load_run_checkpoint(
    path: str | Path, expected_kind: str | type | None = None
) -> tuple[dict[str, Any], DictConfig]:
    """Load a checkpoint (``weights_only``) and the run config it carries; check it holds ``expected_kind``
    (a task kind's name, or a LightningModule class the model must be an instance of).

    Falls back to the run directory's ``.hydra/config.yaml`` for checkpoints without an embedded config.
    """
    import torch  # lazy: imagelab.tasks.training imports this module before the config check (no torch before it)

    ckpt_path = Path(path).expanduser()
    if not ckpt_path.is_file():
        raise UserError(
            f"checkpoint {ckpt_path} does not exist: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise UserError(_unreadable_reason(ckpt_path, exc)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(
            f"{ckpt_path} is not a Lightning checkpoint (no state_dict): use one from a run's checkpoints/"
        )
    run_config = checkpoint.get(RUN_CONFIG_KEY)
    if run_config is None:
        saved = ckpt_path.parent.parent / HYDRA_DIR / "config.yaml"
        if not saved.is_file():
            raise UserError(
                f"{ckpt_path} carries no run config and {saved} does not exist: it was not written by scripts/train.py"
            )
        cfg = OmegaConf.load(saved)
    else:
        cfg = OmegaConf.create(run_config)
    if expected_kind is not None:
        _check_kind(ckpt_path, cfg, expected_kind)
    return checkpoint, cfg


def build_module_from_checkpoint(checkpoint: dict[str, Any], cfg: DictConfig) -> Any:
    """Instantiate the LightningModule described by ``cfg.model`` and load the checkpoint's weights into it."""
    module = instantiate_node(cfg.model, "model")
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint weights do not fit the model in its config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})"
        )
    module.eval()
    return module
