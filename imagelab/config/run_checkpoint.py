"""Open a checkpoint written by this framework: its weights, the run config it carries, and what model it is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imagelab.config.instantiation import instantiate_node
from imagelab.core.constants import HYDRA_DIR, RUN_CONFIG_KEY
from imagelab.core.errors import UserError, first_line

# Which script serves which LightningModule (by its config _target_).
MODEL_KINDS = {
    "lightning_modules.denoiser.DenoiserModule": "denoiser",
    "lightning_modules.classifier.ClassifierModule": "classifier",
}
SCRIPT_FOR_KIND = {
    "denoiser": "scripts/eval.py or scripts/denoise.py",
    "classifier": "scripts/eval.py or scripts/predict.py",
}


def model_kind(run_config: dict[str, Any] | DictConfig) -> str:
    """'denoiser', 'classifier', or the model's _target_ when it is some other LightningModule."""
    target = str(run_config.get("model", {}).get("_target_", "?"))
    return MODEL_KINDS.get(target, target)


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
    path: str | Path, expected_kind: str | None = None
) -> tuple[dict[str, Any], DictConfig]:
    """Load a checkpoint (``weights_only``) and the run config it carries; check it holds ``expected_kind``.

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
    kind = model_kind(cfg)
    if expected_kind is not None and kind != expected_kind:
        hint = SCRIPT_FOR_KIND.get(kind, "the script for that model")
        raise UserError(f"{ckpt_path} holds a {kind} model, not a {expected_kind}: use {hint}")
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
