"""The predict task: top-k classes (with names) for the user's image files, from a classifier checkpoint alone."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from datamodules.image_io import IMAGE_EXTENSIONS, list_images, read_image
from imagelab.core.atomic import atomic_write_text
from imagelab.core.errors import UserError
from imagelab.tasks.inference import check_model_choice, pick_device
from imagelab.tracking.console import show
from imagelab.tracking.loggers import instantiate_loggers

# torch and Lightning are imported inside the functions that use them: scripts/predict.py imports this module
# before run_task checks the config, and the model_path= path (an exported file) must never import Lightning.

log = logging.getLogger(__name__)


def list_inputs(input_path: Path) -> tuple[list[Path], Path]:
    """The image files to classify and the folder their printed names are relative to."""
    if input_path.is_file():
        if input_path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"{input_path} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [input_path], input_path.parent
    if input_path.is_dir():
        return list_images(input_path), input_path
    raise UserError(f"input={input_path} does not exist: give an image file or a folder of images")


def eval_transform(preprocess: dict[str, Any]) -> Any:
    """The eval transform a checkpoint was tested with (resize to its input size, centre crop, normalise)."""
    from datamodules.classification_transforms import build_transform  # lazy: imports torch

    return build_transform(
        False,
        size=tuple(int(v) for v in preprocess["image_size"]),
        native=None,
        augment="none",
        strong_policy="randaugment",
        random_erasing=0.0,
        mean=preprocess["mean"],
        std=preprocess["std"],
        interpolation=preprocess.get("interpolation", "bilinear"),
        crop_pct=float(preprocess.get("crop_pct", 1.0)),
    )


def load_classifier(cfg: DictConfig, device: Any) -> tuple[Any, dict[str, Any], list[str]]:
    """(model, preprocessing, class names) of ``cfg.ckpt_path`` or ``cfg.model_path``; the model has
    ``predict_proba``.

    ``ckpt_path`` is a ClassifierModule checkpoint (LoRA merged unless ``merge_lora=false``) or a list of
    them (an ensemble: the average of their probabilities), with ``tta=flip`` applied on top; ``model_path``
    is a file written by ``scripts/export.py``.
    """
    check_model_choice(cfg)
    tta = str(cfg.get("tta") or "none")
    if cfg.get("model_path"):  # no Lightning on this path
        if tta != "none":
            raise UserError("tta= works with ckpt_path= (a checkpoint), not with an exported model_path=")
        from imagelab.deploy.exported_model import ExportedModel  # lazy: imports torch

        model = ExportedModel(str(cfg.model_path), device=str(device)).expect("classifier")
        return model, dict(model.preprocess or {}), list(model.class_names or [])
    from imagelab.kinds import CLASSIFICATION  # lazy: imports torch
    from imagelab.tasks.ensemble import combine, load_members
    from lightning_modules.tta import transforms_of

    transforms_of(tta)  # a bad mode fails before anything is loaded
    members, kind = load_members(cfg.ckpt_path, expected_kind=CLASSIFICATION)
    checkpoint, module = members[0].checkpoint, members[0].module
    preprocess = module.preprocess or checkpoint.get("hyper_parameters", {}).get("preprocess")
    if not preprocess:
        raise UserError(
            f"{cfg.ckpt_path} does not record its preprocessing: use a checkpoint written by scripts/train.py"
        )
    names = list(module.class_names or [])
    if cfg.get("save_adapter"):
        if len(members) > 1:
            raise UserError("save_adapter works with one checkpoint, not an ensemble")
        folder = module.save_adapter(str(cfg.save_adapter))
        show(f"LoRA adapters and head saved to {folder}")
    if cfg.get("merge_lora", True):
        for member in members:
            member.module.merge_adapters()
    model = combine(members, kind, tta)  # several checkpoints: average of their probabilities
    return model.to(device).eval(), preprocess, names


def classify_arrays(model: Any, preprocess: dict[str, Any], names: list[str], images: list[Any], k: int,
                    device: Any, transform: Any = None) -> list[list[tuple[str, float]]]:  # fmt: skip
    """Top-``k`` (class name, probability) of each image array (as read by ``read_image``), in one batch."""
    import torch  # lazy: see the note at the top

    from datamodules.classification_transforms import to_uint8_chw  # lazy: imports torch

    transform = transform or eval_transform(preprocess)
    channels = int(preprocess.get("channels", 3))
    batch = torch.stack([transform(to_uint8_chw(image, channels)) for image in images]).to(device)
    with torch.inference_mode():
        values, indices = model.predict_proba(batch).cpu().topk(min(k, len(names)), dim=-1)
    return [
        [(names[i], float(v)) for i, v in zip(idxs, vals, strict=True)]
        for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def predict_files(cfg: DictConfig) -> dict[str, Any]:
    """Classify every image under ``cfg.input`` with ``cfg.ckpt_path`` or ``cfg.model_path``; print (and
    optionally save) the top-k."""
    from datamodules.classification_transforms import to_uint8_chw  # lazy: imports torch

    check_model_choice(cfg)
    files, base = list_inputs(Path(str(cfg.input)).expanduser())
    top_k = cfg.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise UserError(f"top_k must be an integer >= 1, got {top_k!r}")
    batch_size = cfg.get("batch_size", 32)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    device = pick_device(str(cfg.get("device", "auto")))
    model, preprocess, names = load_classifier(cfg, device)
    loggers = instantiate_loggers(cfg.get("logger"))  # logger=wandb: a W&B table of the predictions
    thumbnails: list[Any] | None = None
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        from imagelab.tracking.wandb_tables import (  # lazy: imports W&B and Lightning, only for logger=wandb
            PREDICT_TABLE_ROWS,
            log_prediction_table,
            thumbnail,
        )

        thumbnails = []
    transform = eval_transform(preprocess)
    channels = int(preprocess.get("channels", 3))
    k = min(top_k, len(names))
    rows: list[tuple[str, list[tuple[str, float]]]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [read_image(f) for f in chunk]
        if thumbnails is not None:
            room = max(0, PREDICT_TABLE_ROWS - len(thumbnails))
            thumbnails += [thumbnail(to_uint8_chw(im, channels), 128) for im in images[:room]]
        tops = classify_arrays(model, preprocess, names, images, k, device, transform)
        for file, top in zip(chunk, tops, strict=True):
            rows.append((file.relative_to(base).as_posix(), top))
            show(f"{rows[-1][0]}: " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    if cfg.get("output"):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", *[f"{what}{i + 1}" for i in range(k) for what in ("class", "prob")]])
        for file, top in rows:
            writer.writerow([file, *[x for name, p in top for x in (name, f"{p:.6f}")]])
        atomic_write_text(Path(str(cfg.output)).expanduser(), buffer.getvalue())
        show(f"predictions written to {cfg.output}")
    if thumbnails is not None:
        log_prediction_table(loggers, rows, thumbnails)
    return {"metrics": {"images": len(rows)}, "predictions": rows, "loggers": loggers}
