"""Shared test set-up: everything offline, and the fixtures (temporary launch folders, composed configs, one
tiny trained run of each task). Helper functions live in ``tests/helpers`` (see its ``__init__``)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.compose import activate, compose, set_output_dir
from tests.helpers.in_process import train_composed, working_dir
from tests.helpers.overrides import DIGITS, FOUR_STEP_DENOISE, fast_denoise

# Offline everywhere, also in the scripts the tests start as subprocesses (they inherit os.environ).
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_DISABLE_GIT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONWARNINGS", "ignore")


# Fixtures that train a model: every test that uses one (directly or through another fixture) is slow.
TRAINED_RUN_FIXTURES = {"tiny_denoise_run", "tiny_classifier_run"}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` the tests that need a trained run (``TRAINED_RUN_FIXTURES``)."""
    for item in items:
        if TRAINED_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary launch directory (outputs/ and wandb/ land inside it)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def restore_torch_flags() -> Iterator[None]:
    """Put back the process-wide torch flags the speed switches set (cuDNN benchmark, matmul precision) after
    the test; modules that train in-process use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    benchmark, precision = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    yield
    torch.backends.cudnn.benchmark = benchmark
    torch.set_float32_matmul_precision(precision)


def _copy_into(cfg: Any, out_dir: Path) -> Any:
    """A deep copy of a composed config whose run folder is ``out_dir``, made Hydra's current config."""
    cfg = copy.deepcopy(cfg)
    set_output_dir(cfg, out_dir)
    return activate(cfg)


def _one_thread_train(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Train a composed config inside ``out_dir`` on one intra-op thread (faster for tiny nets on 2 shared
    cores); ``train``'s result plus ``run_dir``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with working_dir(out_dir):
            return {**train_composed(_copy_into(cfg, out_dir)), "run_dir": out_dir}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cfg_denoise_global(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The train config of a four-step denoiser run (``FOUR_STEP_DENOISE``), composed once per session."""
    return compose("train", FOUR_STEP_DENOISE, output_dir=tmp_path_factory.mktemp("cfg_denoise"))


@pytest.fixture
def cfg_denoise(cfg_denoise_global: Any, tmp_path: Path) -> Any:
    """A copy of ``cfg_denoise_global`` writing into this test's ``tmp_path`` (change it freely)."""
    return _copy_into(cfg_denoise_global, tmp_path)


@pytest.fixture(scope="session")
def cfg_classifier_global(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The train config of the two-epoch digits classifier run (``DIGITS``), composed once per session."""
    return compose("train", DIGITS, output_dir=tmp_path_factory.mktemp("cfg_classifier"))


@pytest.fixture
def cfg_classifier(cfg_classifier_global: Any, tmp_path: Path) -> Any:
    """A copy of ``cfg_classifier_global`` writing into this test's ``tmp_path`` (change it freely)."""
    return _copy_into(cfg_classifier_global, tmp_path)


@pytest.fixture(scope="session")
def tiny_denoise_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two-epoch denoiser (``fast_denoise``, no logger), trained once per session in this process:
    ``train``'s result (``trainer``, ``metrics``, ``best_checkpoint``) and its ``run_dir``. Read it only."""
    out_dir = tmp_path_factory.mktemp("tiny_denoise")
    return _one_thread_train(compose("train", fast_denoise("none"), output_dir=out_dir), out_dir)


@pytest.fixture(scope="session")
def tiny_classifier_run(
    cfg_classifier_global: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The two-epoch digits classifier (``cfg_classifier_global``), trained once per session in this process:
    ``train``'s result (``trainer``, ``metrics``, ``best_checkpoint``) and its ``run_dir``. Read it only."""
    return _one_thread_train(cfg_classifier_global, tmp_path_factory.mktemp("tiny_classifier"))
