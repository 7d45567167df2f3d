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
from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import DIGITS, FOUR_STEP_DENOISE, fast_denoise

# Offline everywhere, also in the scripts the tests start as subprocesses (they inherit os.environ).
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_DISABLE_GIT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONWARNINGS", "ignore")


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


def _one_thread_train(out_dir: Path, *overrides: str) -> dict[str, Any]:
    """Train in-process inside ``out_dir`` on one intra-op thread (faster for tiny nets on 2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {**train_in_process(out_dir, *overrides, chdir=True), "run_dir": out_dir}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cfg_denoise_global(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The train config of a four-step denoiser run (``FOUR_STEP_DENOISE``), composed once per session."""
    return compose("train", FOUR_STEP_DENOISE, output_dir=tmp_path_factory.mktemp("cfg_denoise"))


@pytest.fixture
def cfg_denoise(cfg_denoise_global: Any, tmp_path: Path) -> Any:
    """A copy of ``cfg_denoise_global`` writing into this test's ``tmp_path`` (change it freely)."""
    cfg = copy.deepcopy(cfg_denoise_global)
    set_output_dir(cfg, tmp_path)
    return activate(cfg)


@pytest.fixture(scope="session")
def cfg_classifier_global(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The train config of the two-epoch digits classifier run (``DIGITS``), composed once per session."""
    return compose("train", DIGITS, output_dir=tmp_path_factory.mktemp("cfg_classifier"))


@pytest.fixture
def cfg_classifier(cfg_classifier_global: Any, tmp_path: Path) -> Any:
    """A copy of ``cfg_classifier_global`` writing into this test's ``tmp_path`` (change it freely)."""
    cfg = copy.deepcopy(cfg_classifier_global)
    set_output_dir(cfg, tmp_path)
    return activate(cfg)


@pytest.fixture(scope="session")
def tiny_denoise_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two-epoch denoiser (``fast_denoise``, no logger), trained once per session in this process:
    ``train``'s result (``trainer``, ``metrics``, ``best_checkpoint``) and its ``run_dir``. Read it only."""
    return _one_thread_train(tmp_path_factory.mktemp("tiny_denoise"), *fast_denoise("none"))


@pytest.fixture(scope="session")
def tiny_classifier_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two-epoch digits classifier (``DIGITS``), trained once per session in this process: ``train``'s
    result (``trainer``, ``metrics``, ``best_checkpoint``) and its ``run_dir``. Read it only."""
    return _one_thread_train(tmp_path_factory.mktemp("tiny_classifier"), *DIGITS)
