"""A user's own network (tests/helpers/user_net.py) and one YAML of theirs, with a timm optimizer the framework
never named (Lion): trained on the bundled photos, evaluated and reloaded from its checkpoint alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.in_process import train_in_process
from tests.helpers.overrides import fast_denoise
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import read_metrics, run_script, single_run_dir

pytestmark = pytest.mark.usefixtures("restore_torch_flags")

# the user's config folder, outside conf/: one YAML for their network
USER_NET_YAML = """\
_target_: tests.helpers.user_net.TinyNet
channels: ${data.channels}
width: 8
"""


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One epoch of the user's TinyNet with Lion, trained in this process (saves an interpreter start)."""
    root = tmp_path_factory.mktemp("user_parts")
    (root / "my_conf" / "model" / "net").mkdir(parents=True)
    (root / "my_conf" / "model" / "net" / "tiny.yaml").write_text(USER_NET_YAML)
    return train_in_process(
        root,
        *(o for o in fast_denoise("csv") if not o.startswith("model.net.")),
        "trainer.max_epochs=1",
        f"hydra.searchpath=[file://{root / 'my_conf'}]",
        "model/net=tiny",
        "model/optimizer=lion",
        "model.optimizer.lr=3e-3",
        "data.batch_size=8",
    )


@pytest.mark.slow
def test_user_network_trains_with_lion_and_learns(user_run: dict) -> None:
    import torch

    record = user_run
    m = record["metrics"]
    # TinyNet starts as the identity (psnr == psnr_noisy): it must have learned to denoise
    assert m["test/psnr"] > m["test/psnr_noisy"] + 0.5, m
    ckpt = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["net"] == {"_target_": "tests.helpers.user_net.TinyNet", "channels": 1, "width": 8}
    assert hp["optimizer"]["opt"] == "lion"
    state = list(ckpt["optimizer_states"][0]["state"].values())
    assert state and all(set(v) == {"exp_avg"} for v in state)  # Lion keeps one moment (Adam: two + step)
    assert ckpt["lr_schedulers"] and ckpt["lr_schedulers"][0]["last_epoch"] > 0  # the schedule stepped


@pytest.mark.slow
def test_user_network_evaluates_from_its_checkpoint_alone(user_run: dict, tmp_path: Path) -> None:
    record = user_run
    # the user's package must be importable, as anything a _target_ names: here the repo root holds `tests`
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    proc = run_script(
        "eval.py",
        f"ckpt_path={record['best_checkpoint']}",
        "logger=none",
        "baselines=[]",
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath},
    )
    evaluated = read_metrics(single_run_dir(tmp_path, "eval"))["metrics"]
    assert evaluated["test/psnr"] == pytest.approx(record["metrics"]["test/psnr"], abs=1e-4)
    assert "model: TinyNet" in proc.stdout
