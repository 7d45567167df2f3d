"""Benchmark plans: ``conf/benchmark/<mode>.yaml`` read into dataclasses (what one ``mode`` measures).

A plan file lists the overhead-section models, the data modules measured alone, the fast-path models and
variants and the repeat counts (format described in ``conf/benchmark/smoke.yaml``). Override lists may nest
(a YAML anchor reused and extended): they are flattened. ``${data_root}`` is the benchmark's CIFAR-shaped data,
``workers`` (if present) is clamped to this machine's CPU count, and ``${oc.select:cli.repeats,N}`` reads the
command line's ``repeats``. A plan with an unknown key, a missing one or a value of the wrong kind is a
``UserError`` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from imagelab.core.errors import UserError

PLAN_DIR = Path(__file__).resolve().parents[3] / "conf" / "benchmark"
GOAL_MS = 1.0  # framework - bare loop, ms per step, on CPU, of the near-zero-compute rows (issue 13)
PLAN_ONLY_KEYS = ("vars", "workers", "tiny_cases")  # read while loading, not fields of Plan


@dataclass
class ModelCase:
    """One model measured in the overhead section: train-config overrides and its timing window."""

    name: str
    overrides: list[str]
    batch_size: int
    warmup: int
    steps: int
    kind: str = "denoiser"  # denoiser | classifier (which data modules it is compared with)
    overhead_goal_ms: float | None = None  # near-zero-compute rows: goal for framework - bare, ms/step


@dataclass
class DataCase:
    """One data module measured alone: train-config overrides (data group) and the model it feeds."""

    name: str
    overrides: list[str]
    batch_size: int
    batches: int
    feeds: str  # ModelCase.name whose images/s it is compared with
    warmup: int = 2


@dataclass
class Plan:
    """Everything one benchmark mode measures."""

    mode: str
    device: str
    repeats: int
    models: list[ModelCase]
    data: list[DataCase]
    cfg_job_repeats: int
    first_step_repeats: int
    fast_path_models: list[ModelCase] = field(default_factory=list)
    fast_path_variants: list[tuple[str, list[str]]] = field(default_factory=list)
    resident_vs_loader: list[tuple[str, list[str]]] = field(default_factory=list)
    resident_base: list[str] = field(default_factory=list)  # fast paths of the resident-vs-loader runs
    fast_path_repeats: int = 1
    cifar_images: tuple[int, int] = (512, 128)  # synthetic CIFAR-shaped train / test images
    framework_overrides: list[str] = field(default_factory=list)
    logger: str = "wandb"

    def base_overrides(self) -> list[str]:
        """The framework's own configuration (default callbacks and logger; W&B offline, nothing uploaded)."""
        base = ["tags=[benchmark]", "test=false"]
        if self.logger == "wandb":
            base += ["logger.wandb.mode=offline", "logger.wandb.project=imagelab-benchmark"]
        else:
            base.append(f"logger={self.logger}")
        return [*base, *self.framework_overrides]


def merge_overrides(*groups: list[str]) -> list[str]:
    """Concatenate override lists; a later ``key=value`` replaces an earlier one of the same key."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged[override.split("=", 1)[0]] = override
    return list(merged.values())


def select_variants(
    variants: list[tuple[str, Any]], words: list[str], option: str = "fast_path_variants"
) -> list[tuple[str, Any]]:
    """The (name, item) pairs whose name contains one of ``words``; a UserError naming ``option`` when none does."""
    words = [str(w) for w in words]
    kept = [v for v in variants if any(w in v[0] for w in words)]
    if not kept:
        names = "; ".join(name for name, _ in variants)
        raise UserError(f"{option}={words} matches nothing in this mode: {names}")
    return kept


def plan_names(plan_dir: Path = PLAN_DIR) -> list[str]:
    """The modes that have a plan file (``conf/benchmark/<mode>.yaml``)."""
    return sorted(p.stem for p in plan_dir.glob("*.yaml"))


def tiny_cases(
    cifar_root: str, steps: int, warmup: int, extra: list[str] | tuple[str, ...] = ()
) -> list[ModelCase]:
    """The near-zero-compute model rows of the overhead section (denoiser and classifier).

    ``steps`` timed steps after ``warmup`` steps; ``cifar_root`` holds the benchmark's CIFAR-shaped files;
    ``extra`` overrides go first (e.g. ``trainer=gpu``). See ``imagelab.tasks.benchmark.step_overhead``.
    """
    batches = warmup + steps + 1
    denoiser = ModelCase(
        "tiny denoiser (DnCNN 2 x 1, 8 px, batch 8)",
        [
            *extra,
            "data=denoise_photos_gpu",  # batches made by tensor ops: the data path costs next to nothing
            "data.patch_size=8",
            "data.batch_size=8",
            f"data.patches_per_epoch={8 * batches}",
            "data.eval_crop=16",
            "model.net.depth=2",
            "model.net.width=1",
            "model.net.batch_norm=false",
            "model.num_panels=0",
        ],
        8,
        warmup,
        steps,
        overhead_goal_ms=GOAL_MS,
    )
    classifier = ModelCase(
        "tiny classifier (small CNN 2 ch, 32 px, batch 8)",
        [
            *extra,
            "model=classifier",
            "model.backbone=small_cnn",
            "model.pretrained=false",
            "+model.timm_kwargs.widths=[2]",
            "data=cifar10_gpu",
            f"data.root={cifar_root}",
            "data.download=false",
            "data.batch_size=8",
            "data.eval_batch_size=64",
            "data.val_size=64",
        ],
        8,
        warmup,
        steps,
        "classifier",
        overhead_goal_ms=GOAL_MS,
    )
    return [denoiser, classifier]


def _flatten(items: Any, where: str) -> list[str]:
    """An override list with nested lists spliced in; every item must be a string."""
    if not isinstance(items, list):
        raise UserError(f"{where} must be a list of overrides, got {items!r}")
    flat: list[str] = []
    for item in items:
        if isinstance(item, list):
            flat += _flatten(item, where)
        elif isinstance(item, str):
            flat.append(item)
        else:
            raise UserError(f"{where}: an override must be a string like key=value, got {item!r}")
    return flat


def _check_keys(node: Any, cls: type, where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``node`` as a dict whose keys are fields of ``cls`` (all required ones present)."""
    if not isinstance(node, dict):
        raise UserError(f"{where} must be a mapping, got {node!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - set(fields) - set(skip))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(fields)}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n != "mode"
    ]
    missing = [n for n in required if n not in node]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}")
    return {k: v for k, v in node.items() if k in fields}


def _positive(value: Any, where: str, zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise UserError(f"{where} must be a {'non-negative' if zero else 'positive'} integer, got {value!r}")
    return value


def _model(node: Any, where: str) -> ModelCase:
    case = ModelCase(**_check_keys(node, ModelCase, where))
    case.overrides = _flatten(case.overrides, f"{where}.overrides")
    for key in ("batch_size", "steps"):
        _positive(getattr(case, key), f"{where}.{key}")
    _positive(case.warmup, f"{where}.warmup", zero=True)
    if case.kind not in ("denoiser", "classifier"):
        raise UserError(f"{where}.kind must be denoiser or classifier, got {case.kind!r}")
    return case


def _data(node: Any, where: str) -> DataCase:
    case = DataCase(**_check_keys(node, DataCase, where))
    case.overrides = _flatten(case.overrides, f"{where}.overrides")
    _positive(case.batch_size, f"{where}.batch_size")
    _positive(case.batches, f"{where}.batches")
    _positive(case.warmup, f"{where}.warmup", zero=True)
    return case


def _named(nodes: Any, where: str) -> list[tuple[str, list[str]]]:
    """``[{name, overrides}]`` -> ``[(name, overrides)]``."""
    pairs = []
    for i, node in enumerate(nodes or []):
        if not isinstance(node, dict) or set(node) != {"name", "overrides"}:
            raise UserError(f"{where}[{i}] must have exactly the keys name and overrides, got {node!r}")
        pairs.append((str(node["name"]), _flatten(node["overrides"], f"{where}[{i}].overrides")))
    return pairs


def _resolve(path: Path, data_root: Path, repeats: int | None) -> dict[str, Any]:
    """The plan file as plain containers, interpolations resolved."""
    try:
        cfg = OmegaConf.load(path)
        cfg.data_root = str(data_root)
        if repeats is not None:
            cfg.cli = {"repeats": repeats}
        if "workers" in cfg:
            cfg.workers = min(_positive(cfg.workers, f"{path}: workers"), os.cpu_count() or 1)
        node = OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise UserError(f"benchmark plan {path} cannot be read: {exc}") from None
    if not isinstance(node, dict):
        raise UserError(f"benchmark plan {path} must be a mapping")
    for key in ("data_root", "cli"):
        node.pop(key, None)
    return node


def load_plan(mode: str, data_root: Path, repeats: int | None = None, plan_dir: Path = PLAN_DIR) -> Plan:
    """The plan of ``mode`` (``<plan_dir>/<mode>.yaml``) with CIFAR-shaped files under ``data_root``;
    ``repeats`` (the command line's) replaces the plan's own ``repeats``."""
    path = plan_dir / f"{mode}.yaml"
    if not path.is_file():
        raise UserError(f"no benchmark plan {path}; plans: {', '.join(plan_names(plan_dir)) or 'none'}")
    node = _resolve(path, data_root, repeats)
    where = f"{path.name}"
    values = _check_keys(node, Plan, where, skip=PLAN_ONLY_KEYS)
    plan = Plan(
        mode=mode,
        **{k: v for k, v in values.items() if k not in ("mode", "models", "data")},
        models=[],
        data=[],
    )
    if repeats is not None:
        plan.repeats = repeats
    plan.models = [_model(n, f"{where}: models[{i}]") for i, n in enumerate(values["models"] or [])]
    tiny = node.get("tiny_cases")
    if tiny is not None:
        if not isinstance(tiny, dict) or not {"steps", "warmup"} <= set(tiny) <= {"steps", "warmup", "extra"}:
            raise UserError(f"{where}: tiny_cases must be {{steps, warmup[, extra]}}, got {tiny!r}")
        extra = _flatten(tiny.get("extra", []), f"{where}: tiny_cases.extra")
        plan.models += tiny_cases(str(data_root), tiny["steps"], tiny["warmup"], extra)
    if not plan.models:
        raise UserError(f"{where}: models is empty")
    plan.data = [_data(n, f"{where}: data[{i}]") for i, n in enumerate(values["data"] or [])]
    names = [m.name for m in plan.models]
    for case in plan.data:
        if case.feeds not in names:
            raise UserError(f"{where}: data case {case.name!r} feeds {case.feeds!r}, not a model of the plan")
    plan.fast_path_models = [
        _model(n, f"{where}: fast_path_models[{i}]") for i, n in enumerate(plan.fast_path_models)
    ]
    plan.fast_path_variants = _named(plan.fast_path_variants, f"{where}: fast_path_variants")
    plan.resident_vs_loader = _named(plan.resident_vs_loader, f"{where}: resident_vs_loader")
    plan.resident_base = _flatten(plan.resident_base, f"{where}: resident_base")
    plan.framework_overrides = _flatten(plan.framework_overrides, f"{where}: framework_overrides")
    if plan.fast_path_models and not plan.fast_path_variants:
        raise UserError(f"{where}: fast_path_models need fast_path_variants")
    if plan.device not in ("cpu", "cuda"):
        raise UserError(f"{where}: device must be cpu or cuda, got {plan.device!r}")
    for key in ("repeats", "cfg_job_repeats", "fast_path_repeats"):
        _positive(getattr(plan, key), f"{where}: {key}")
    _positive(plan.first_step_repeats, f"{where}: first_step_repeats", zero=True)
    images = plan.cifar_images
    if not isinstance(images, list | tuple) or len(images) != 2:
        raise UserError(f"{where}: cifar_images must be [train, test] image counts, got {images!r}")
    plan.cifar_images = (
        _positive(images[0], f"{where}: cifar_images"),
        _positive(images[1], f"{where}: cifar_images"),
    )
    return plan
