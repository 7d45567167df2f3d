"""Every config the project ships composes with every override it carries, on a CPU, in-process.

* every ``experiment`` (and every ``data`` option) composes, resolves and leaves nothing at ``???``;
* every ``hparams_search`` preset composes on the base its header comment gives, every job of its own search
  space (each choice, both ends of each interval) composes, and each documented sampler switch works;
* every benchmark plan (``conf/benchmark/*.yaml``: smoke, cpu, gpu) composes every row the benchmark would
  run: its models, data modules, fast-path models x variants and resident-vs-loader rows, with the plan's
  own base overrides. A GPU row that cannot compose fails here, long before a GPU is lent.
* experiments that pick a fine-tuning preset take the preset's learning rate.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from imagelab.tasks.benchmark.plan import load_plan, merge_overrides
from tests.helpers.config_compose import Composer
from tests.helpers.paths import CONF_DIR, REPO_ROOT, SCRIPTS

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
PLANS = sorted(p.stem for p in (CONF_DIR / "benchmark").glob("*.yaml"))  # smoke, cpu, gpu
SAMPLERS = {
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
}
# what imagelab.tasks.benchmark.framework_vs_bare.framework_run adds to every timed run
FRAMEWORK_RUN = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=10",
    "++trainer.limit_val_batches=2",
    "+callbacks.bench_timer._target_=imagelab.tasks.benchmark.timing.StepTimer",
    "+callbacks.bench_timer.warmup=1",
    "+callbacks.bench_timer.steps=5",
]


@pytest.fixture(scope="module")
def composer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Composer]:
    work = tmp_path_factory.mktemp("compose")
    with Composer(work).session() as session:
        yield session
    print(f"\ntest_shipped_configs: {session.composed} jobs composed")


def _header_command(preset: str) -> list[str]:
    """The overrides of the first ``python scripts/train.py -m ...`` line in the preset's header comment."""
    for line in (CONF_DIR / "hparams_search" / f"{preset}.yaml").read_text().splitlines():
        match = re.match(r"#\s+python scripts/train\.py (.*)", line)
        if match:
            args = [arg for arg in shlex.split(match.group(1)) if arg not in ("-m", "--multirun")]
            return [re.sub(r"^\[(\S+=\S+)\]$", r"\1", arg) for arg in args]  # [key=value]: an optional one
    raise AssertionError(f"conf/hparams_search/{preset}.yaml: no example command in its header")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(composer: Composer, experiment: str) -> None:
    composer.job("train", [f"experiment={experiment}"])


def test_every_data_option_composes_where_it_needs_nothing_more(composer: Composer) -> None:
    needs_root = {
        "denoise_folder": "data.source.root",
        "denoise_pairs": "data.source.root",
        "image_folder": "data.root",
    }
    for data in DATA:
        extra = [f"{needs_root[data]}=some/folder"] if data in needs_root else []
        cfg = composer.job("train", [f"data={data}", *extra])
        loader_keys = {"num_workers", "pin_memory", "persistent_workers", "prefetch_factor"}
        assert loader_keys <= set(cfg.data), f"data={data} lacks {loader_keys - set(cfg.data)}"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_search_preset_and_its_search_space_compose(composer: Composer, preset: str) -> None:
    base = [*_header_command(preset)]
    (cfg,) = composer.command("train", base)
    assert cfg.hydra.sweeper.params, f"{preset} searches nothing"
    jobs = composer.search_space_jobs("train", base, cfg)
    assert len(jobs) > len(cfg.hydra.sweeper.params)
    mode = {"max": "maximize", "min": "minimize"}[cfg.objective.mode]
    direction = cfg.hydra.sweeper.direction
    assert (direction[0] if OmegaConf.is_list(direction) else direction) == mode


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("preset", PRESETS)
def test_each_documented_sampler_switch_works_with_each_preset(
    composer: Composer, preset: str, sampler: str
) -> None:
    from hydra.utils import instantiate

    (cfg,) = composer.command("train", [*_header_command(preset), f"hydra/sweeper/sampler={sampler}"])
    made = instantiate(cfg.hydra.sweeper.sampler)  # the seed resolves, every key is the sampler's
    assert type(made).__name__ == SAMPLERS[sampler]


def test_the_presets_keep_their_own_sampler_settings(composer: Composer) -> None:
    tpe = composer.command("train", ["hparams_search=denoiser_optuna"])[0].hydra.sweeper.sampler
    assert tpe._target_ == "optuna.samplers.TPESampler" and tpe.n_startup_trials == 5
    nsga = composer.command("train", _header_command("classifier_nsga2"))[0].hydra.sweeper.sampler
    assert nsga._target_ == "optuna.samplers.NSGAIISampler" and nsga.population_size == 10


def _plan_jobs(mode: str, data_root: Path) -> list[tuple[str, list[str]]]:
    """(row name, train overrides) of every run the benchmark plan ``mode`` composes."""
    plan = load_plan(mode, data_root, plan_dir=CONF_DIR / "benchmark")
    base = plan.base_overrides()
    jobs = [(f"model {c.name}", merge_overrides(base, c.overrides, FRAMEWORK_RUN)) for c in plan.models]
    jobs += [
        (f"data {c.name}", merge_overrides(c.overrides, [f"data.batch_size={c.batch_size}"]))
        for c in plan.data
    ]
    for case in plan.fast_path_models:
        for name, extra in plan.fast_path_variants:
            jobs.append(
                (
                    f"fast path {case.name} / {name}",
                    merge_overrides(base, case.overrides, extra, FRAMEWORK_RUN),
                )
            )
        for name, extra in plan.resident_vs_loader:
            overrides = merge_overrides(base, case.overrides, [*plan.resident_base, *extra], FRAMEWORK_RUN)
            jobs.append((f"resident vs loader {case.name} / {name}", overrides))
    return jobs


def test_the_plans_are_found() -> None:
    assert {"smoke", "cpu", "gpu"} <= set(PLANS)


@pytest.mark.parametrize("mode", PLANS)
def test_every_row_of_every_benchmark_plan_composes(composer: Composer, mode: str, tmp_path: Path) -> None:
    jobs = _plan_jobs(mode, tmp_path / "cifar")
    assert jobs
    failures = []
    for name, overrides in jobs:
        try:
            composer.job("train", overrides)
        except AssertionError as exc:
            failures.append(f"{mode}: {name}: {exc}")
    assert not failures, "\n".join(failures)


def test_experiments_that_pick_a_finetune_preset_take_its_learning_rate(composer: Composer) -> None:
    checked = 0
    for experiment in EXPERIMENTS:
        cfg = composer.job("train", [f"experiment={experiment}"])
        preset = cfg.hydra.runtime.choices.get("finetune")
        if preset in (None, "null"):
            continue
        preset_cfg = OmegaConf.load(CONF_DIR / "finetune" / f"{preset}.yaml")
        preset_lr = OmegaConf.select(preset_cfg, "optimizer.lr")
        if preset_lr is not None:
            assert cfg.model.optimizer.lr == preset_lr, f"experiment={experiment} overrides the {preset} lr"
            checked += 1
    assert checked >= 2  # cifar10_vit_lora, cifar10_vit_linear_probe


def test_train_help_lists_only_the_groups_training_reads() -> None:
    def groups(script: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, cwd=REPO_ROOT
        ).stdout
        section = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
        return {line.split(":")[0] for line in section.splitlines() if re.match(r"^[\w/]+: ", line)}

    train = groups("train.py")
    assert {"data", "model", "experiment", "hparams_search", "adversarial", "debug"} <= train
    assert not {"attack", "benchmark"} & train
    assert "attack" in groups("eval.py")
