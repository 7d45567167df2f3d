"""Path keys given with ``~`` or relative to the launch folder, run-folder names and the stable ``best.ckpt``.

One tiny real training run with ``HOME`` pointing at a temporary folder: its data folder and its log folder
are given as ``~/...`` (Hydra-quoted, as the docs show), then a second run starts from the first one's
``last.ckpt`` given as ``~/...`` and a third reads its images from a relative folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage.io import imsave

from tests.helpers.runs import run_script

RUN_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_[0-9a-f]{6}$")  # <time>_<6 hex>
TINY = [
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.early_stopping=null",
    "trainer.accelerator=cpu",
    "data=denoise_folder",
    "data.patches_per_epoch=64",
    "data.batch_size=16",
    "data.eval_crop=32",
    "model.net.depth=2",
    "model.net.width=4",
]


pytestmark = pytest.mark.slow  # every test reads the runs of one module-scoped training fixture


def _write_photos(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("camera", "coins", "moon", "astronaut", "coffee", "chelsea", "page", "text"):
        image = getattr(skdata, name)()
        imsave(folder / f"{name}.png", np.asarray(image)[:96, :96], check_contrast=False)


@pytest.fixture(scope="module")
def home_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("home")
    launch = tmp_path_factory.mktemp("launch")
    _write_photos(home / "photos")
    env = {"HOME": str(home)}
    first = run_script(
        "train.py",
        *TINY,
        'data.source.root="~/photos"',
        'paths.log_dir="~/runs"',
        "trainer.max_epochs=3",
        cwd=launch,
        env=env,
    )
    runs = sorted((home / "runs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    return {"home": home, "launch": launch, "env": env, "run": runs[0], "stdout": first.stdout}


def test_tilde_paths_are_expanded_where_they_are_used(home_runs: dict) -> None:
    launch, run = home_runs["launch"], home_runs["run"]
    assert not (launch / "~").exists() and not (launch / "outputs").exists()
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert RUN_NAME.match(run.name), run.name
    assert (run / "train.log").is_file()  # <script>.log, as the README says


def test_the_best_checkpoint_has_a_stable_name_and_is_the_best_epoch(home_runs: dict) -> None:
    import torch

    run = home_runs["run"]
    record = json.loads((run / "metrics.json").read_text())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert Path(record["best_checkpoint"]) == run / "checkpoints" / "best.ckpt"
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    history = [
        row for row in csv_rows(run) if row.get("val/psnr") not in (None, "")
    ]  # one row per validation epoch
    best_epoch = max(history, key=lambda row: float(row["val/psnr"]))["epoch"]
    assert best["epoch"] == int(best_epoch)
    assert float(record["objective"]["best"]) == pytest.approx(
        max(float(row["val/psnr"]) for row in history), abs=1e-4
    )


def csv_rows(run: Path) -> list[dict[str, str]]:
    """The rows of the run's CSV logger file (``logger=csv``)."""
    import csv

    files = list(run.rglob("metrics.csv"))
    assert len(files) == 1, files
    with files[0].open() as handle:
        return list(csv.DictReader(handle))


def test_ckpt_path_with_tilde_starts_a_new_run(home_runs: dict) -> None:
    home, run = home_runs["home"], home_runs["run"]
    last = f"~/{(run / 'checkpoints' / 'last.ckpt').relative_to(home)}"
    run_script(
        "train.py",
        *TINY,
        'data.source.root="~/photos"',
        'paths.log_dir="~/runs"',
        "trainer.max_epochs=4",
        f'ckpt_path="{last}"',
        cwd=home_runs["launch"],
        env=home_runs["env"],
    )
    runs = sorted((home / "runs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    record = json.loads((runs[1] / "metrics.json").read_text())
    assert record["status"] == "completed"
    rows = [row for row in csv_rows(runs[1]) if row.get("val/psnr") not in (None, "")]
    assert [int(row["epoch"]) for row in rows] == [3]  # continued after the first run's 3 epochs


def test_relative_data_folder_is_read_from_the_launch_folder(home_runs: dict, tmp_path: Path) -> None:
    _write_photos(tmp_path / "my photos")
    run_script(
        "train.py",
        *TINY,
        "data.source.root=my photos",
        "trainer.max_epochs=1",
        cwd=tmp_path,
        env=home_runs["env"],
    )
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
