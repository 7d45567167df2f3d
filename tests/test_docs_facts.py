"""Small facts the user docs state, checked against the code and configs they describe.

* the keys a user needs (issue list) are named in the docs and exist in the config they belong to;
* user docs and configs describe the software, not its development history;
* the install section names what the extras really add; no doc or script points outside the repository;
* run-folder names shown in the docs have the real shape ``<time>_<6 hex>``; the W&B group of a sweep is
  ``<script>-<sweep folder name>``, as docs/sweeps.md says;
* the GPU wheel preparation script and scripts/gpu_check.sh install the same package list.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf, open_dict

from tests.helpers.compose import compose
from tests.helpers.paths import CONF_DIR, REPO_ROOT

USER_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
USER_FILES = [*USER_DOCS, *sorted(CONF_DIR.rglob("*.yaml")), REPO_ROOT / "scripts" / "gpu_check.sh"]
DOCS_TEXT = "\n".join(p.read_text() for p in USER_DOCS)

# (config, overrides, key) of the keys a user needs; each must exist there and be named in the docs
NEEDED_KEYS = [
    ("train", ["data=denoise_cifar10"], "data.source.max_images"),
    ("train", [], "callbacks.early_stopping.patience"),
    ("train", [], "model.num_panels"),
    ("train", ["model/net=unet"], "model.net.base_width"),
    ("train", ["model/net=unet"], "model.net.levels"),
    ("train", [], "model.scheduler.min_lr_ratio"),
    ("train", ["model/scheduler=step"], "model.scheduler.step_size"),
    ("train", ["model/scheduler=step"], "model.scheduler.gamma"),
    ("benchmark", [], "keep_runs"),
    ("export", [], "bench.batch"),
    ("export", [], "bench.repeats"),
    ("export", [], "bench.metric"),
]
NEEDED_WORDS = ["summarize.py", "--per-class", "+data.KEY=VALUE", "experiment=denoise_blind"]
HISTORY = [
    r"\bthe issue\b",
    r"\bissue \d+",
    r"as given in the issue",
    r"has not been run for this README",
    r"no GPU lent",
    r"other agents",
    r"\bthis task\b",
    r"seed article",
    r"the old default",
    r"\bthe seed's\b",
]


@pytest.mark.parametrize(("config", "overrides", "key"), NEEDED_KEYS, ids=[k for _, _, k in NEEDED_KEYS])
def test_a_needed_key_exists_and_is_documented(config: str, overrides: list[str], key: str) -> None:
    cfg = compose(config, overrides)
    assert OmegaConf.select(cfg, key, default="absent", throw_on_resolution_failure=False) != "absent"
    short = key.split(".", 1)[1] if key.startswith(("bench.", "model.scheduler.")) else key
    assert f"`{key}" in DOCS_TEXT or f"`{short}`" in DOCS_TEXT or f"`{key}=" in DOCS_TEXT, (
        f"{key} is not documented"
    )


def test_the_other_needed_options_are_documented() -> None:
    for word in NEEDED_WORDS:
        assert word in DOCS_TEXT, word


@pytest.mark.parametrize("path", USER_FILES, ids=[str(p.relative_to(REPO_ROOT)) for p in USER_FILES])
def test_user_docs_and_configs_carry_no_development_history(path: Path) -> None:
    text = path.read_text()
    found = [m.group(0) for pattern in HISTORY for m in re.finditer(pattern, text, re.I)]
    assert not found, f"{path.relative_to(REPO_ROOT)}: {found}"


def test_the_install_section_names_what_the_extras_add() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = (REPO_ROOT / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    for extra in extras:
        assert f'".[{extra}]"' in install, f"README Install does not show the {extra} extra"
    for extra in extras:
        for requirement in extras[extra]:
            name = re.split(r"[<>=\[; ]", requirement)[0]
            if name == "imagelab":
                assert "whole `deploy`, `baselines` and `cluster` extras" in install
                continue
            words = {name, name.replace("-", " "), {"litserve": "LitServe"}.get(name, name)}
            assert any(w in install for w in words), f"README Install does not name {name} ({extra})"


def test_nothing_points_outside_the_repository() -> None:
    files = [
        *USER_DOCS,
        *sorted((REPO_ROOT / "scripts").rglob("*.sh")),
        *sorted((REPO_ROOT / "scripts").glob("*.py")),
    ]
    for path in files:
        assert "../shared" not in path.read_text(), path


def test_run_folder_names_in_the_docs_have_the_real_shape() -> None:
    stamps = re.findall(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\w*", DOCS_TEXT)
    assert stamps, "the docs show no example run folder"
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_[0-9a-f]{6}", stamp), stamp
    # <time> alone only where the real name has no id: gpu_check's output folder, a resumption's record
    # (.hydra/resume-<time>, and .hydra/failed-resume-<time> once it failed)
    text = DOCS_TEXT.replace("outputs/gpu_check/<time>", "").replace("resume-<time>", "")
    assert re.search(r"<time>(?!_<id>|_<6)", text) is None


def test_the_wandb_group_of_a_sweep_is_the_script_and_the_sweep_folder(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from imagelab.tracking.loggers import wandb_run_name_and_group

    sweep = tmp_path / "2026-05-01_12-00-00_a1b2c3"
    cfg = compose("train", ["model.optimizer.lr=0.01"], output_dir=sweep / "0")
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(sweep)
        cfg.hydra.job.name = "train"
    HydraConfig.instance().set_config(cfg)
    _, group = wandb_run_name_and_group()
    assert group == f"train-{sweep.name}"
    assert "`<script>-<sweep folder name>`" in (REPO_ROOT / "docs" / "sweeps.md").read_text()


def test_the_wheel_script_and_the_gpu_check_install_the_same_packages() -> None:
    listed = [
        line.split("==")[0]
        for line in (REPO_ROOT / "scripts" / "gpu" / "wheel_packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dry = subprocess.run(
        ["bash", "scripts/gpu/prepare_wheels.sh", "--dry-run"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert all(f"{name}==" in dry.stdout for name in listed)
    packages = subprocess.run(
        ["bash", "-c", "cd scripts/.. && " + _gpu_check_packages_line()],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert packages.stdout.split() == listed
    for doc in (REPO_ROOT / "docs" / "scaling.md", REPO_ROOT / "scripts" / "gpu_check.sh"):
        assert "scripts/gpu/prepare_wheels.sh" in doc.read_text()


def _gpu_check_packages_line() -> str:
    """scripts/gpu_check.sh's own PACKAGES= line, and an echo of the result."""
    text = (REPO_ROOT / "scripts" / "gpu_check.sh").read_text()
    line = next(row for row in text.splitlines() if row.startswith("PACKAGES="))
    return f'{line}; echo "$PACKAGES"'


def test_the_documented_add_overrides_compose() -> None:
    """The ``+`` examples of conf/data/denoise_photos.yaml and docs/classification.md compose as written."""
    conf_text = (CONF_DIR / "data" / "denoise_photos.yaml").read_text()
    eval_noise = re.search(r"e\.g\. (\+data/noise@data\.eval_noise=\w+)", conf_text).group(1)
    assert compose("train", [eval_noise]).data.eval_noise.sigma == 25
    doc = (REPO_ROOT / "docs" / "classification.md").read_text()
    timm_kwargs = re.search(r"`'(\+model\.timm_kwargs=\{[^}]*\})'`", doc).group(1)
    assert compose("train", ["model=classifier_vit", timm_kwargs]).model.timm_kwargs.img_size == 32


def test_the_digits_test_split_has_the_documented_size(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    data = instantiate(
        compose("train", ["experiment=digits_small_cnn", f"data.root={tmp_path / 'digits'}"]).data
    )
    data.setup("fit")
    sizes = {split: len(items) for split, items in data.splits.items()}
    assert "359 test digits" in (REPO_ROOT / "docs" / "deployment.md").read_text()
    assert f"{sizes['train']:,} train / {sizes['val']} val / {sizes['test']} test digits" in DOCS_TEXT
    assert sizes["test"] == 359


def _table_rows(heading: str) -> list[tuple[str, str]]:
    """(left, right) cells of the first table under README's ``heading``."""
    section = (REPO_ROOT / "README.md").read_text().split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [(cells[0].strip("| "), cells[1].strip("| ")) for cells in rows[1:]]


def _override_sets(cell: str, fill: Path) -> list[list[str]]:
    """The ``key=value`` overrides of each code span of a table cell, placeholders filled with ``fill``."""
    sets = []
    for span in re.findall(r"`([^`]+)`", cell):
        tokens = [token.strip("'") for token in re.findall(r"'[^']+'|\S+", span)]
        overrides = [
            re.sub(r"\b(FILE|DIR|RUN_FOLDER)\b", str(fill), token.replace("=NAME", "=digits_small_cnn"))
            for token in tokens
            if re.fullmatch(r"[+~]?[\w./@-]+=\S.*", token)
        ]
        if overrides:
            sets.append(overrides)
    return sets


@pytest.mark.parametrize(
    ("heading", "least"),
    [("### Coming from timm's `train.py`", 20), ("### Coming from lightning-hydra-template", 6)],
    ids=["timm", "lightning-hydra-template"],
)
def test_the_migration_tables_name_real_keys(heading: str, least: int, tmp_path: Path) -> None:
    """Every override in README's tables for timm and lightning-hydra-template users composes."""
    base = ["model=classifier", "data=image_folder", f"data.root={tmp_path}"]
    rows = _table_rows(heading)
    sets = [overrides for _, right in rows for overrides in _override_sets(right, tmp_path)]
    for overrides in sets:
        compose("train", [*base, *overrides])
    assert all(left and right for left, right in rows)
    assert len(sets) >= least


# option sets under which README's keys exist (a key is real when one of them has it)
KEY_CONTEXTS = [
    [],
    ["model/net=unet"],
    ["model/scheduler=step"],
    ["data=denoise_folder"],
    ["data=denoise_pairs"],
    ["data=denoise_cifar10"],
    ["data/noise=gaussian_blind"],
    ["data/noise=salt_pepper"],
    ["model=classifier", "data=image_folder", "data.root=/x"],
    ["model=classifier", "data=cifar10"],
    ["callbacks=[default,ema]"],
    ["trainer=ddp_multinode"],
]
CONFIG_ROOTS = ("data", "model", "trainer", "logger", "callbacks", "paths", "objective", "lr_scaling")
KEY_PATTERN = re.compile(r"(?<![\w./+-])((?:" + "|".join(CONFIG_ROOTS) + r")(?:\.\w+)+)(?==|\b)")


def test_every_config_key_the_readme_names_exists() -> None:
    """A dotted key in README's code spans (``data.source.root``, ``logger.wandb.settings.init_timeout``) exists."""
    text = (REPO_ROOT / "README.md").read_text()
    spans = re.findall(r"`([^`\n]+)`", text)
    keys = {m.group(1) for span in spans for m in re.finditer(KEY_PATTERN, span)}
    keys = {k for k in keys if not k.endswith((".py", ".yaml", ".md", ".ckpt"))}
    configs = [compose("train", overrides) for overrides in KEY_CONTEXTS]
    missing = [
        key
        for key in sorted(keys)
        if all(
            OmegaConf.select(c, key, default="absent", throw_on_resolution_failure=False) == "absent"
            for c in configs
        )
    ]
    assert len(keys) > 40
    assert not missing, f"README names keys that no config has: {missing}"
