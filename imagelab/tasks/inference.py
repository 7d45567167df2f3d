"""The denoise task: apply a trained denoiser to the user's image files, tile by tile when they are large."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from datamodules.image_io import IMAGE_EXTENSIONS, from_float, list_images, read_image, to_float, write_image
from imagelab.core.errors import UserError
from imagelab.tasks.default_denoiser import photo_model_checkpoint
from imagelab.tracking.console import show

# torch, Lightning and the exported-model runtime are imported inside the functions that use them:
# scripts/denoise.py imports this module before run_task checks the config (a mistyped value costs a second,
# not torch's start-up), and the model_path= path (an exported file) must never import Lightning.

log = logging.getLogger(__name__)


def pick_device(name: str) -> Any:
    """torch.device for ``auto`` (GPU when available), ``cpu``, ``cuda`` or ``cuda:N`` (config key ``device``)."""
    from imagelab.core.devices import resolve_device  # lazy: imports torch (see above)

    return resolve_device(name, "device")


def plan_outputs(input_path: Path, output_dir: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """Pairs (input file, output file) keeping names and sub-folders; refuses to touch any input file."""
    if input_path.is_file():
        if input_path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"{input_path} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        pairs = [(input_path, output_dir / input_path.name)]
    elif input_path.is_dir():
        pairs = [(p, output_dir / p.relative_to(input_path)) for p in list_images(input_path)]
    else:
        raise UserError(f"input={input_path} does not exist: give an image file or a folder of images")
    inputs = {p.resolve() for p, _ in pairs}
    for _, out in pairs:
        if out.resolve() in inputs:
            raise UserError(
                f"output={output_dir} would overwrite the input {out}: choose another output folder"
            )
        if out.exists() and not overwrite:
            raise UserError(f"{out} already exists: choose an empty output folder or pass overwrite=true")
    return pairs


def _model_stacks(x: Any, channels: int) -> list[Any]:
    """A (C, H, W) image as the (channels, H, W) stacks a ``channels``-channel model takes (see denoise_array)."""
    if x.shape[0] == channels:
        return [x]
    if channels == 1:
        return [x[c : c + 1] for c in range(x.shape[0])]
    if channels == 3 and x.shape[0] == 1:
        return [x.expand(3, -1, -1)]
    raise UserError(f"the model expects {channels} channels, the image has {x.shape[0]}")


def _to_chw(image: Any) -> Any:
    import torch  # lazy: see the note at the top

    x = torch.from_numpy(to_float(image))
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def _from_stacks(outs: list[Any], image: Any) -> Any:
    """Put the denoised stacks of ``image`` back together as an array of its shape and dtype."""
    import torch  # lazy: see the note at the top

    y = torch.cat(outs, dim=0)
    in_channels = 1 if image.ndim == 2 else image.shape[2]
    if y.shape[0] != in_channels:
        y = y.mean(dim=0, keepdim=True)
    y = y[0] if image.ndim == 2 else y.permute(1, 2, 0)
    return from_float(y.numpy(), image.dtype)


def denoise_array(module: Any, image: Any, tile: int, overlap: int, device: Any) -> Any:
    """Denoise one uint8/uint16 (H, W) or (H, W, 3) array; returns the same shape and dtype.

    ``module`` is a DenoiserModule or an exported model (``imagelab.deploy.exported_model.ExportedModel``): anything
    with ``channels`` and ``denoise(batch)``. A colour image through a grayscale model is denoised channel by
    channel; a grayscale image through a colour model is repeated to three channels and averaged back.
    """
    import torch  # lazy: see the note at the top

    from lightning_modules.tiled_inference import denoise_tiled  # lazy: imports torch

    stacks = _model_stacks(_to_chw(image), module.channels)

    def run(t: Any) -> Any:
        return module.denoise(t.to(device)).cpu()

    with torch.inference_mode():
        outs = [denoise_tiled(run, s, tile=tile, overlap=overlap) for s in stacks]
    return _from_stacks(outs, image)


def denoise_arrays(module: Any, images: list[Any], tile: int, overlap: int, device: Any) -> list[Any]:
    """Denoise several arrays like ``denoise_array``; those of one shape and dtype that fit in one tile go
    through the network as a single batch (the HTTP server's request batching)."""
    import torch  # lazy: see the note at the top

    groups: dict[Any, list[int]] = {}
    for i, image in enumerate(images):
        fits = max(image.shape[:2]) <= tile
        groups.setdefault((image.shape, image.dtype.str) if fits else i, []).append(i)
    results: list[Any] = [None] * len(images)
    for indices in groups.values():
        if len(indices) == 1:
            results[indices[0]] = denoise_array(module, images[indices[0]], tile, overlap, device)
            continue
        stacks = [_model_stacks(_to_chw(images[i]), module.channels) for i in indices]
        with torch.inference_mode():
            out = module.denoise(torch.stack([s for group in stacks for s in group]).to(device)).cpu()
        start = 0
        for i, group in zip(indices, stacks, strict=True):
            results[i] = _from_stacks(list(out[start : start + len(group)]), images[i])
            start += len(group)
    return results


def check_model_choice(cfg: Any) -> None:
    """UserError unless exactly one of ``cfg.ckpt_path`` (checkpoint) and ``cfg.model_path`` (exported) is set."""
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("model_path")):
        raise UserError(
            "give exactly one of ckpt_path=<checkpoint> and model_path=<exported .onnx or .pt file>"
        )


def load_denoiser(cfg: DictConfig, device: Any) -> Any:
    """The denoiser of ``cfg.ckpt_path`` or ``cfg.model_path``.

    ``ckpt_path`` is a DenoiserModule checkpoint or a list of them (an ensemble: their average), with
    ``tta=flip|x8`` applied on top; ``model_path`` is a file written by ``scripts/export.py``.
    """
    check_model_choice(cfg)
    tta = str(cfg.get("tta") or "none")
    if cfg.get("model_path"):  # no Lightning on this path
        if tta != "none":
            raise UserError("tta= works with ckpt_path= (a checkpoint), not with an exported model_path=")
        from imagelab.deploy.exported_model import ExportedModel  # lazy: imports torch

        return ExportedModel(str(cfg.model_path), device=str(device)).expect("denoiser")
    from imagelab.kinds import DENOISING  # lazy: imports torch
    from imagelab.tasks.ensemble import combine, load_members
    from lightning_modules.tta import transforms_of

    transforms_of(tta)  # a bad mode fails before anything is loaded
    members, kind = load_members(cfg.ckpt_path, expected_kind=DENOISING)
    return combine(members, kind, tta).to(device)  # several checkpoints: their average; tta: self-ensemble


def denoise_files(cfg: DictConfig) -> dict[str, Any]:
    """Denoise every image under ``cfg.input`` into ``cfg.output`` with ``cfg.ckpt_path`` or ``cfg.model_path``.

    With neither, the newest completed ``experiment=denoise_photo_color`` run's best checkpoint is used.
    """
    if not cfg.get("ckpt_path") and not cfg.get("model_path"):
        with open_dict(cfg):
            cfg.ckpt_path = str(photo_model_checkpoint(Path(cfg.paths.log_dir)))
        show(f"using the newest photo model: {cfg.ckpt_path}")
    check_model_choice(cfg)
    pairs = plan_outputs(Path(cfg.input).expanduser(), Path(cfg.output).expanduser(), bool(cfg.overwrite))
    if int(cfg.tile) <= 2 * int(cfg.overlap):
        raise UserError(f"tile={cfg.tile} must be more than twice overlap={cfg.overlap}")
    device = pick_device(str(cfg.device))
    module = load_denoiser(cfg, device)
    for src, dst in pairs:
        image = read_image(src)
        result = denoise_array(module, image, int(cfg.tile), int(cfg.overlap), device)
        write_image(dst, result)
        log.info("%s -> %s", src, dst)
    show(f"denoised {len(pairs)} image(s) into {cfg.output}")
    return {"metrics": {"images": len(pairs)}, "outputs": [str(d) for _, d in pairs]}
