"""Fault injection: runs never share a folder, never leave a truncated checkpoint, never exit 0 on failure.

Real runs of ``scripts/train.py`` get their fault at a known step from ``tests/helpers/fault_injection.py``
(a signal, NaN weights, a full disk); the cheap guarantees are checked in-process.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagelab.core.atomic import remove_stale_partials
from imagelab.core.checkpoint_io import AtomicCheckpointIO
from imagelab.core.run_dirs import claim_unique_dir
from imagelab.tracking.wandb_offline import read_offline_run
from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.paths import REPO_ROOT, SCRIPTS
from tests.helpers.runs import assert_one_line_error, read_metrics

FAST = [*FAST_DENOISE, "trainer.max_epochs=2"]  # 256 patches / batch 32 = 8 steps per epoch
STEPS_PER_EPOCH = 8
STOP_STEP = STEPS_PER_EPOCH + 3  # in the middle of the second epoch
HELPERS = "tests.helpers.fault_injection"


def train(
    cwd: Path, *overrides: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run scripts/train.py in ``cwd`` with umask 022 and the repository importable (for the helpers);
    ``env`` adds environment variables."""
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "train.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: os.umask(0o022),
    )


def fault(name: str, **params: object) -> list[str]:
    """Overrides that load ``tests.helpers.fault_injection.<name>(**params)`` as callback ``fault``."""
    return [
        f"+callbacks.fault._target_={HELPERS}.{name}",
        *(f"+callbacks.fault.{k}={v}" for k, v in params.items()),
    ]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "train" / "runs").iterdir())


# ------------------------------------------------------------------------------------------ run folders


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch) -> None:
    import secrets

    monkeypatch.setattr("time.strftime", lambda fmt: "2026-01-01_00-00-00")
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # the second claim collides once and retries
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(suffixes))
    first, second = claim_unique_dir(tmp_path), claim_unique_dir(tmp_path)
    assert first != second and Path(first).is_dir() and Path(second).is_dir()


@pytest.mark.slow
def test_two_real_starts_at_once_write_two_folders(tmp_path: Path) -> None:
    env = {**os.environ}
    cmd = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "trainer.max_epochs=abc",
    ]  # fails fast, after the folder
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in "ab"
    ]
    for proc in procs:
        proc.communicate(timeout=120)
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    assert all(read_metrics(d)["status"] == "failed" for d in dirs)
    assert {read_metrics(d)["pid"] for d in dirs} == {p.pid for p in procs}


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("background", [True, False])
def test_a_save_that_fails_half_way_leaves_no_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch, background: bool
) -> None:
    tmpdir = tmp_path / "elsewhere"  # $TMPDIR on another tree, as with a tmpfs /tmp
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    target = tmp_path / "ckpts" / "best.ckpt"
    io = AtomicCheckpointIO(background=background)
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    io.wait()
    good = target.read_bytes()

    def half_then_full(obj, path):
        Path(path).write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
        io.wait()  # a background write's error reaches the caller here at the latest
    io.teardown()  # raised once, not again
    assert target.read_bytes() == good  # the old checkpoint is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["best.ckpt"]
    assert not list(tmpdir.iterdir())


KILL_SCRIPT = """
import sys, torch
from imagelab.core.checkpoint_io import AtomicCheckpointIO
io, big = AtomicCheckpointIO(), torch.randn(8_000_000)
for i in range(10_000):
    io.save_checkpoint({"state_dict": {"w": big}, "i": i}, sys.argv[1])  # written in the background
    io.wait()
    print(i, flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_truncated_checkpoint(tmp_path: Path) -> None:
    tmpdir = tmp_path / "elsewhere"
    tmpdir.mkdir()
    target = tmp_path / "ckpts" / "last.ckpt"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(target)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for _ in range(2):  # two complete saves, then kill it while the next one is being written
        assert proc.stdout.readline().strip()
    proc.kill()
    proc.wait(timeout=60)
    checkpoint = torch.load(target, weights_only=True)  # complete, whatever the moment of the kill
    assert checkpoint["state_dict"]["w"].numel() == 8_000_000
    assert not list(tmpdir.iterdir())
    leftovers = [p for p in target.parent.iterdir() if p.name != "last.ckpt"]
    assert all(p.name.startswith(".") and ".partial" in p.name for p in leftovers)
    remove_stale_partials(target.parent)
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


# ----------------------------------------------------------------------------- signals, resume, NaN


@pytest.fixture(scope="module")
def interrupted_and_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same 2-epoch run twice: once whole, once stopped by SIGTERM in epoch 2 and then resumed."""
    whole_root, cut_root = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("cut")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, str(SCRIPTS / "train.py"), *FAST]
    stop = fault("SignalAtStep", step=STOP_STEP)
    whole = subprocess.Popen(
        cmd, cwd=whole_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    cut = train(cut_root, *FAST, *stop)
    whole_out = whole.communicate(timeout=600)
    assert whole.returncode == 0, whole_out[1][-3000:]
    [cut_dir] = run_dirs(cut_root)
    interrupted = read_metrics(cut_dir)
    interrupted["saved_step"] = torch.load(cut_dir / "checkpoints" / "last.ckpt", weights_only=True)[
        "global_step"
    ]
    resumed = train(cut_root, f"resume={cut_dir}", "callbacks.fault=null")
    return {
        "whole": read_metrics(run_dirs(whole_root)[0]),
        "cut": cut,
        "cut_dir": cut_dir,
        "interrupted": interrupted,
        "resumed": resumed,
        "cut_root": cut_root,
    }


@pytest.mark.slow
def test_sigterm_exits_143_with_status_interrupted_and_a_loadable_last_checkpoint(
    interrupted_and_uninterrupted: dict,
) -> None:
    cut, rec = interrupted_and_uninterrupted["cut"], interrupted_and_uninterrupted["interrupted"]
    assert cut.returncode == 143, cut.stderr[-3000:]
    assert rec["status"] == "interrupted" and rec["signal"] == "SIGTERM"
    assert f"step {STOP_STEP}" in rec["error"]
    assert rec["last_checkpoint"] == str(
        interrupted_and_uninterrupted["cut_dir"] / "checkpoints" / "last.ckpt"
    )
    assert rec["saved_step"] == STOP_STEP
    assert "Traceback" not in cut.stderr
    messages = [line for line in cut.stderr.splitlines() if line.startswith(("SIGTERM", "interrupted:"))]
    assert len(messages) == 2 and "resume=" in messages[1], cut.stderr[-2000:]
    wandb_run = read_offline_run(rec["wandb"]["run_dir"])["run"]
    assert wandb_run["exit_code"] == 143 and wandb_run.get("preempting") is True


@pytest.mark.slow
def test_resume_continues_in_the_same_folder_and_wandb_run_and_matches_an_uninterrupted_run(
    interrupted_and_uninterrupted: dict,
) -> None:
    data = interrupted_and_uninterrupted
    resumed = data["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(data["cut_root"]) == [data["cut_dir"]]  # no new run folder
    final = read_metrics(data["cut_dir"])
    assert final["status"] == "completed"
    assert final["wandb"]["id"] == data["interrupted"]["wandb"]["id"]
    whole = data["whole"]["metrics"]
    for key in ("val/psnr_best", "test/psnr", "test/ssim"):
        assert final["metrics"][key] == pytest.approx(whole[key], abs=1e-4), key
    recorded = list((data["cut_dir"] / ".hydra").glob("resume-*/overrides.yaml"))
    assert len(recorded) == 1 and "resume=" in recorded[0].read_text()


@pytest.mark.slow
def test_run_files_follow_the_umask_and_record_the_code_version(interrupted_and_uninterrupted: dict) -> None:
    run_dir = interrupted_and_uninterrupted["cut_dir"]
    for path in (run_dir / "metrics.json", run_dir / "checkpoints" / "last.ckpt"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    code = read_metrics(run_dir)["code"]
    assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
    assert (run_dir / "code.diff").is_file() == code["dirty"]
    wandb_config = read_offline_run(read_metrics(run_dir)["wandb"]["run_dir"])["config"]
    assert wandb_config["code"]["commit"] == code["commit"]


@pytest.mark.slow
def test_ctrl_c_stops_once_with_exit_130(tmp_path: Path) -> None:
    proc = train(tmp_path, *FAST, "logger=none", *fault("SignalAtStep", step=3, signum="SIGINT"))
    assert proc.returncode == 130, proc.stderr[-3000:]
    [run_dir] = run_dirs(tmp_path)
    rec = read_metrics(run_dir)
    assert rec["status"] == "interrupted" and rec["signal"] == "SIGINT"
    assert "KeyboardInterrupt" not in proc.stderr + proc.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.slow
def test_nan_loss_fails_the_run_at_that_step_and_saves_no_checkpoint(tmp_path: Path) -> None:
    proc = train(tmp_path, *FAST, "logger=none", *fault("PoisonWeightsAtStep", step=3))
    assert proc.returncode == 3, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "became nan at step 4 (epoch 0" in errors[0], proc.stderr[-2000:]
    [run_dir] = run_dirs(tmp_path)
    assert read_metrics(run_dir)["status"] == "failed"
    assert not list(run_dir.rglob("*.ckpt"))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.slow
def test_disk_full_while_logging_is_one_line_and_a_failed_record(tmp_path: Path) -> None:
    proc = train(tmp_path, *FAST, "logger=none", *fault("DiskFullAtValidation"))
    assert_one_line_error(proc, "no space left on device while writing", "panel.png")
    [run_dir] = run_dirs(tmp_path)
    assert read_metrics(run_dir)["status"] == "failed"


@pytest.mark.slow
@pytest.mark.parametrize("background", ["true", "false"])
def test_disk_full_while_writing_a_checkpoint_fails_the_run_in_one_line_without_checkpoints(
    tmp_path: Path, background: str
) -> None:
    plugin = f"{HELPERS}.CheckpointIOOnAFullDisk"
    proc = train(
        tmp_path,
        *FAST,
        "logger=none",
        f"checkpoint_io._target_={plugin}",
        f"checkpoint_io.background={background}",
    )
    assert_one_line_error(proc, "no space left on device while writing", "/checkpoints/.")
    [run_dir] = run_dirs(tmp_path)
    assert read_metrics(run_dir)["status"] == "failed"
    assert not list((run_dir / "checkpoints").iterdir())  # neither a checkpoint nor a partial file


def test_mistyped_value_is_one_line_before_any_heavy_import_and_leaves_no_wandb_run(tmp_path: Path) -> None:
    # Python lists every module it imports (-X importtime): the check must fail the run before torch loads
    proc = train(tmp_path, "trainer.max_epochs=abc", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert_one_line_error(proc, "trainer.max_epochs", "integer")
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "imagelab.tasks.runner" in imported  # the listing works
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "lightning", "wandb"))
    assert not heavy, f"imported before the error: {heavy[:5]}"
    [run_dir] = run_dirs(tmp_path)
    assert read_metrics(run_dir)["status"] == "failed" and not (run_dir / "wandb").exists()


def _image_folder(root: Path, classes: int, broken: bool = False) -> Path:
    from skimage import data

    from datamodules.image_io import write_image

    photo = data.astronaut()
    for c in range(classes):
        for i in range(6):
            write_image(root / f"class{c}" / f"{i}.png", photo[i * 30 : i * 30 + 32, c * 40 : c * 40 + 32])
    if broken:
        (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("cifar10_offline", "CIFAR-10 not found"),
        ("one_class", "need at least 2 classes, found 1"),
        ("unreadable_image", "broken.png"),
    ],
)
def test_classifier_data_errors_are_one_line_without_a_wandb_run(
    case: str, expected: str, tmp_path: Path
) -> None:
    if case == "cifar10_offline":
        data = ["experiment=cifar10_small_cnn", f"data.root={tmp_path / 'no_data'}"]
    else:
        folder = _image_folder(
            tmp_path / "images", 1 if case == "one_class" else 2, case == "unreadable_image"
        )
        data = [
            "model=classifier_small_cnn",
            "data=image_folder",
            f"data.root={folder}",
            "data.image_size=32",
        ]
    proc = train(tmp_path, *data, "trainer.max_epochs=1", "trainer.accelerator=cpu")
    assert_one_line_error(proc, expected)
    assert "meta tensor" not in proc.stderr
    [run_dir] = run_dirs(tmp_path)
    assert read_metrics(run_dir)["status"] == "failed"
    assert not list(run_dir.rglob("offline-run-*")), "a run that failed on its data left a W&B run"


@pytest.mark.slow
def test_train_refuses_a_truncated_or_foreign_checkpoint_in_one_line(tmp_path: Path) -> None:
    run_config = {"model": {"_target_": "lightning_modules.classifier.ClassifierModule"}, "data": {}}
    foreign = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "run_config": run_config}, foreign)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(foreign.read_bytes()[:200])
    proc = train(tmp_path, f"ckpt_path={truncated}", "logger=none")
    assert_one_line_error(proc, "truncated.ckpt", "truncated")
    proc = train(tmp_path, f"ckpt_path={foreign}", "logger=none")
    assert_one_line_error(proc, "classifier.ckpt", "holds a classifier model, not a denoiser")


def test_an_unsafe_checkpoint_is_refused_with_a_whole_sentence(tmp_path: Path) -> None:
    from imagelab.config.run_checkpoint import load_run_checkpoint
    from imagelab.core.errors import UserError

    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Path("x")}, path)  # a pickled Python object
    with pytest.raises(UserError) as info:
        load_run_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"refused to load {path}") and "arbitrary code" in message
    assert message.endswith("trust its source") and "\n" not in message


# ------------------------------------------------------------------------------------------ sweeps


@pytest.mark.slow
def test_a_multirun_whose_jobs_all_fail_exits_non_zero_and_says_where(tmp_path: Path) -> None:
    proc = train(tmp_path, "-m", "trainer.max_epochs=abc,xyz")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 2 jobs did not complete" in proc.stderr
    sweep = next((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert str(sweep / "0" / "metrics.json") in proc.stderr


@pytest.mark.slow
def test_an_optuna_search_whose_trials_all_fail_ends_with_the_report(tmp_path: Path) -> None:
    proc = train(
        tmp_path, "-m", "hparams_search=denoiser_optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=abc"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 2 jobs did not complete" in proc.stderr
    assert "Record does not exist" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_signal_outside_the_trainer_interrupts_at_once() -> None:
    from imagelab.core.errors import RunInterrupted
    from imagelab.core.signals import STATE, install_signal_handlers, received_signal

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_signal_handlers()
        with pytest.raises(RunInterrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        assert info.value.exit_code == 143 and received_signal() == signal.SIGTERM
    finally:
        STATE.reset()  # later in-process trainings of this test session must not see this signal
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("module", ["imagelab.tasks.runner", "imagelab.tasks.training"])
def test_the_config_is_checked_before_any_heavy_import(module: str) -> None:
    """scripts/train.py imports these before run_task checks the config: a mistyped value costs a second."""
    code = f"import sys, {module}; print(sorted({{'torch', 'lightning', 'wandb'}} & set(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
