"""A reader who follows only the README gets through the quickstart, their own data, a sweep and an export.

The commands are read out of README.md, so the test runs what the page says: each is found by the start of
its text, run for real through bash from a fresh launch folder, with only a tiny-run suffix appended (fewer
steps, a smaller network) and the page's placeholders filled as the reader would (`<time>_<id>` from the
folder the previous step printed, `$HOME` pointing at a home that holds `clean_photos/`). `tests/test_docs_commands.py`
composes every documented command; this one runs the path a newcomer takes, end to end.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage.io import imsave

from tests.helpers.overrides import fast_denoise, sweep_denoise
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import read_metrics, sweep_jobs

pytestmark = pytest.mark.slow

README = (REPO_ROOT / "README.md").read_text()
TINY_RUN = fast_denoise("wandb")
TINY_SWEEP_JOB = sweep_denoise("csv")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def readme_command(start: str) -> str:
    """The README's command line that begins with ``start`` (inside a bash block), without its comment."""
    for line in README.splitlines():
        if line.startswith(start):
            return re.sub(r"\s+#\s.*$", "", line)  # as bash reads it: quotes and $HOME kept for the shell
    raise AssertionError(f"README.md has no command starting with {start!r}")


def run_as_reader(command: str, cwd: Path, home: Path, *suffix: str) -> str:
    """Run a README command through bash in ``cwd`` with ``suffix`` appended; its output, or the failure."""
    line = command.replace("python scripts/", f"{shlex.quote(sys.executable)} {REPO_ROOT}/scripts/", 1)
    line = " ".join([line, *map(shlex.quote, suffix)])
    proc = subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env={**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\nexited {proc.returncode}:\n{output[-5000:]}"
    return output


def printed_run(output: str, cwd: Path, task: str = "train") -> Path:
    """The run folder the script printed (``outputs/<task>/runs/<time>_<id>``)."""
    names = re.findall(rf"outputs/{task}/runs/(\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{{6}})", output)
    assert names, f"no run folder printed:\n{output[-3000:]}"
    return cwd / "outputs" / task / "runs" / names[-1]


def with_run(command: str, run: Path) -> str:
    """The command with the page's ``<time>_<id>`` replaced by ``run``'s folder name."""
    assert "<time>_<id>" in command, command
    return command.replace("<time>_<id>", run.name)


def write_photos(folder: Path, names: tuple[str, ...], size: int = 128) -> None:
    """Centre crops of scikit-image's colour photos as PNG files: a user's folder of clean photos."""
    folder.mkdir(parents=True)
    for name in names:
        image = getattr(skdata, name)()
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        imsave(folder / f"{name}.png", np.ascontiguousarray(image[top : top + size, left : left + size, :3]))


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh launch folder and a home holding the reader's own photos."""
    cwd, home = tmp_path_factory.mktemp("reader"), tmp_path_factory.mktemp("home")
    write_photos(home / "clean_photos", PHOTOS)
    write_photos(cwd / "photos", PHOTOS[:2], size=96)
    return cwd, home


def test_quickstart_train_eval_denoise_then_export(reader: tuple[Path, Path]) -> None:
    cwd, home = reader
    run = printed_run(run_as_reader(readme_command("python scripts/train.py"), cwd, home, *TINY_RUN), cwd)
    metrics = read_metrics(run)
    assert metrics["status"] == "completed"
    assert metrics["metrics"]["test/psnr"] > metrics["metrics"]["test/psnr_noisy"] + 1.0
    assert (run / "checkpoints" / "best.ckpt").is_file()

    evaluated = run_as_reader(with_run(readme_command("python scripts/eval.py ckpt_path="), run), cwd, home)
    eval_run = printed_run(evaluated, cwd, task="eval")
    assert read_metrics(eval_run)["status"] == "completed"
    assert "bm3d" in evaluated

    denoise = with_run(readme_command("python scripts/denoise.py ckpt_path="), run)
    assert "input=photos/ output=denoised/" in denoise
    run_as_reader(denoise, cwd, home)
    assert sorted(p.name for p in (cwd / "denoised").iterdir()) == ["astronaut.png", "chelsea.png"]

    export = with_run(readme_command("python scripts/export.py ckpt_path="), run)
    exported = run_as_reader(export, cwd, home)
    export_run = printed_run(exported, cwd, task="export")
    assert read_metrics(export_run)["status"] == "completed"
    assert list(export_run.rglob("*.onnx")), sorted(p.name for p in export_run.rglob("*"))


def test_own_photos_then_a_sweep_and_its_summary(reader: tuple[Path, Path]) -> None:
    cwd, home = reader
    own = readme_command('python scripts/train.py data=denoise_folder data.source.root="$HOME/clean_photos"')
    run = printed_run(run_as_reader(own, cwd, home, *TINY_RUN), cwd)
    record = read_metrics(run)
    assert record["status"] == "completed"
    assert record["metrics"]["test/psnr"] > record["metrics"]["test/psnr_noisy"]
    assert (
        f"root: {home / 'clean_photos'}" in (run / ".hydra" / "config.yaml").read_text()
    )  # bash expanded $HOME

    sweep_output = run_as_reader(
        readme_command("python scripts/train.py -m model.optimizer.lr="), cwd, home, *TINY_SWEEP_JOB
    )
    [sweep] = {
        cwd / "outputs" / "train" / "multiruns" / name
        for name in re.findall(r"multiruns/(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6})", sweep_output)
    }
    jobs = sweep_jobs(sweep)
    assert len(jobs) == 4
    assert all(read_metrics(job)["status"] == "completed" for job in jobs)
    summary = readme_command('python scripts/summarize.py "outputs/train/multiruns/<time>_<id>"')
    run_as_reader(summary.replace("<time>_<id>", sweep.name), cwd, home)
    written = {p.suffix for p in sweep.rglob("*") if p.is_file() and p.parent == sweep}
    assert {".md", ".csv"} <= written, sorted(p.name for p in sweep.iterdir())
