"""The denoise task: apply a trained denoiser to the user's image files, tile by tile when they are large."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiment_utils.errors import UserError

log = logging.getLogger(__name__)


def pick_device(name: str) -> Any:
    """torch.device for ``auto`` (GPU when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA GPU is visible: use device=cpu")
    return torch.device(name)


def plan_outputs(input_path: Path, output_dir: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """Pairs (input file, output file) keeping names and sub-folders; refuses to touch any input file."""
    from datamodules.image_io import IMAGE_EXTENSIONS, list_images

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


def denoise_array(module: Any, image: Any, tile: int, overlap: int, device: Any) -> Any:
    """Denoise one uint8/uint16 (H, W) or (H, W, 3) array; returns the same shape and dtype.

    A colour image through a grayscale model is denoised channel by channel; a grayscale image through a
    colour model is repeated to three channels and averaged back.
    """
    import numpy as np
    import torch

    from datamodules.image_io import from_float, to_float
    from lightning_modules.tiled_inference import denoise_tiled

    x = torch.from_numpy(to_float(image))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    channels = module.channels
    if x.shape[0] == channels:
        stacks = [x]
    elif channels == 1:
        stacks = [x[c : c + 1] for c in range(x.shape[0])]
    elif channels == 3 and x.shape[0] == 1:
        stacks = [x.expand(3, -1, -1)]
    else:
        raise UserError(f"the model expects {channels} channels, the image has {x.shape[0]}")

    def run(t: Any) -> Any:
        return module.denoise(t.to(device)).cpu()

    with torch.inference_mode():
        outs = [denoise_tiled(run, s, tile=tile, overlap=overlap) for s in stacks]
    y = torch.cat(outs, dim=0)
    if y.shape[0] != x.shape[0]:
        y = y.mean(dim=0, keepdim=True)
    y = y[0] if image.ndim == 2 else y.permute(1, 2, 0)
    return from_float(np.asarray(y.numpy()), image.dtype)


def denoise_files(cfg: DictConfig) -> dict[str, Any]:
    """Denoise every image under ``cfg.input`` into ``cfg.output`` with the checkpoint ``cfg.ckpt_path``."""
    from datamodules.image_io import read_image, write_image
    from experiment_utils.ensemble import combine, load_members
    from lightning_modules.tta import transforms_of

    tta = str(cfg.get("tta") or "none")
    transforms_of(tta)  # a bad mode fails before anything is loaded
    members, kind = load_members(cfg.ckpt_path, expected_kind="denoiser")
    pairs = plan_outputs(Path(cfg.input).expanduser(), Path(cfg.output).expanduser(), bool(cfg.overwrite))
    if int(cfg.tile) <= 2 * int(cfg.overlap):
        raise UserError(f"tile={cfg.tile} must be more than twice overlap={cfg.overlap}")
    device = pick_device(str(cfg.device))
    module = combine(members, kind, tta).to(device)  # several checkpoints: their average; tta: self-ensemble
    for src, dst in pairs:
        image = read_image(src)
        result = denoise_array(module, image, int(cfg.tile), int(cfg.overlap), device)
        write_image(dst, result)
        log.info("%s -> %s", src, dst)
    print(f"denoised {len(pairs)} image(s) into {cfg.output}")
    return {"metrics": {"images": len(pairs)}, "outputs": [str(d) for _, d in pairs]}
