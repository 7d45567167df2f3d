"""A default tiny run through the real script: what its console shows (once, without noise) and what its
offline W&B run holds (ranking summaries, the per-image table, lr curves by group, a clean config, checkpoint
artifacts with best/latest aliases, metrics.json and the resolved config)."""

from __future__ import annotations

from collections import Counter

import pytest

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.runs import read_metrics, run_script, single_run_dir

# The default callbacks (progress bar, model summary...) and config printing stay on: this is what users see.
TINY_DEFAULT = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.patches_per_epoch=128",
    "trainer.log_every_n_steps=2",  # 4 steps per epoch: log (train loss, lr) every 2
    "data.eval_crop=64",
    "model.net.depth=3",
    "model.net.width=8",
    "logger=wandb",
    "logger.wandb.log_model=true",
    "tags=[pytest]",
]
# What a default run printed before (issue 10) and must not print again.
NOISE = [
    "litlogger",
    "litmodels",
    "Tip:",
    "anonymous setting",
    "LeafSpec",
    "FLOPs",
    "Modules in train mode",
    "val_psnr",  # a zero-parameter metric module in the model summary
    "Run history",
    "Run summary",
    "Test metric",  # Lightning's own test table
    "URL not available",
    "v_num",
    "alembic",
]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("default_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("COLUMNS", "160")  # a terminal of ordinary width (rich reads COLUMNS when not on a tty)
        mp.delenv("WANDB_SILENT", raising=False)  # W&B's console output is part of what a user sees
        proc = run_script("train.py", *TINY_DEFAULT, cwd=root)
    run_dir = single_run_dir(root)
    runs = find_offline_runs(run_dir)
    assert len(runs) == 1
    return {
        "console": proc.stdout + proc.stderr,
        "run_dir": run_dir,
        "offline_dir": runs[0],
        "run": read_offline_run(runs[0]),
        "metrics": read_metrics(run_dir),
    }


@pytest.mark.slow
def test_console_has_no_duplicated_line_and_no_noise(default_run: dict) -> None:
    # every line but the config tree's (two callbacks may both say "monitor: auto")
    lines = [ln.rstrip() for ln in default_run["console"].splitlines() if ln.strip() and ln[0] not in "│├└ "]
    repeated = {ln: n for ln, n in Counter(lines).items() if n > 1}
    assert not repeated, f"lines printed more than once: {repeated}"
    found = [word for word in NOISE if word in default_run["console"]]
    assert not found, f"noise on the console: {found}\n{default_run['console']}"
    # one log format: no plain "INFO: ..." copies of Hydra's "[time][INFO] ..." lines
    assert not any(ln.startswith("INFO:") for ln in lines)
    assert any("][INFO] Instantiating model" in ln for ln in lines)


@pytest.mark.slow
def test_console_shows_config_summary_metrics_and_results_once(default_run: dict) -> None:
    lines = default_run["console"].splitlines()
    assert sum(ln.strip() == "config" for ln in lines) == 1  # the config tree's root
    assert any("depth: 3" in ln for ln in lines)
    summary = [ln for ln in lines if ln.lstrip().startswith("net ") and "DnCNN" in ln]
    assert len(summary) == 1  # the model summary: one module with parameters
    bar_metrics = [ln for ln in lines if "train/loss" in ln and "val/psnr" in ln]
    assert bar_metrics, "progress-bar metrics are not on one line"
    assert sum(ln.strip() == "results" for ln in lines) == 1
    table = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.startswith(("psnr ", "ssim "))}
    m = default_run["metrics"]["metrics"]
    assert float(table["psnr"][0]) == pytest.approx(m["val/psnr"], abs=1e-3)
    assert float(table["psnr"][1]) == pytest.approx(m["test/psnr"], abs=1e-3)


@pytest.mark.slow
def test_summaries_rank_runs_by_their_best_value(default_run: dict) -> None:
    run = default_run["run"]
    assert run["metrics"]["val/psnr"]["summary"] == ["max", "last"]
    assert run["metrics"]["val/loss"]["summary"] == ["min", "last"]
    assert run["metrics"]["val/*"]["step_metric"] == "epoch"
    psnr = [row["val/psnr"] for row in run["history"] if "val/psnr" in row]
    assert run["summary"]["val/psnr"]["max"] == pytest.approx(max(psnr))
    assert run["summary"]["val/psnr"]["last"] == pytest.approx(psnr[-1])
    epoch_losses = [row["train/loss_epoch"] for row in run["history"] if "train/loss_epoch" in row]
    assert len(epoch_losses) == 2  # the denoiser's training loss, once per epoch
    lr_keys = {k for row in run["history"] for k in row if k.startswith("lr")}
    assert lr_keys == {"lr"}  # one parameter group (decay and no-decay halves share it), no "lr-Adam/pg1"


@pytest.mark.slow
def test_per_image_table_has_one_row_per_test_image(default_run: dict) -> None:
    table = default_run["run"]["tables"]["test/images"]
    assert table["columns"] == [
        "image",
        "noisy",
        "denoised",
        "clean",
        "psnr_in",
        "psnr_out",
        "ssim_in",
        "ssim_out",
    ]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["image"] for r in rows] == ["camera", "astronaut", "chelsea"]  # the default test photos
    for row in rows:
        for column in ("noisy", "denoised", "clean"):
            image = row[column]
            assert isinstance(image, dict) and image["_type"] == "image-file" and image["width"] == 64
    # the test metrics are the means of the per-image values
    m = default_run["metrics"]["metrics"]
    assert sum(r["psnr_out"] for r in rows) / 3 == pytest.approx(m["test/psnr"], abs=2e-3)
    assert sum(r["psnr_in"] for r in rows) / 3 == pytest.approx(m["test/psnr_noisy"], abs=2e-3)
    assert sum(r["ssim_out"] for r in rows) / 3 == pytest.approx(m["test/ssim"], abs=2e-3)


def _none_paths(value: object, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _none_paths(v, f"{path}.{k}")]
    return [path] if value is None else []


@pytest.mark.slow
def test_logged_config_has_no_duplicated_keys_or_none(default_run: dict) -> None:
    config = default_run["run"]["config"]
    assert config["model"]["net"]["depth"] == 3 and config["data"]["eval_crop"] == 64
    for duplicated in ("net", "loss", "optimizer", "num_panels", "batch_size", "patch_size", "noise"):
        assert duplicated not in config, f"top-level {duplicated!r} duplicates model/data settings"
    assert not _none_paths(config), _none_paths(config)


@pytest.mark.slow
def test_checkpoints_are_artifacts_with_best_and_latest(default_run: dict) -> None:
    models = [a for a in default_run["run"]["artifacts"] if a["type"] == "model"]
    assert models, "logger.wandb.log_model=true logged no checkpoint"
    aliases = [set(a["aliases"]) for a in models]
    assert any({"best", "latest"} <= s for s in aliases)
    best = next(a for a in models if "best" in a["aliases"])
    assert list(best["entries"]) == ["model.ckpt"]


@pytest.mark.slow
def test_metrics_json_and_resolved_config_are_in_the_run(default_run: dict) -> None:
    assert {"metrics.json", "config.yaml"} <= set(default_run["run"]["files"])
    files = default_run["offline_dir"] / "files"
    attached = read_metrics(files)
    assert attached["status"] == "completed" and attached["metrics"] == default_run["metrics"]["metrics"]
    config_text = (files / "config.yaml").read_text()
    assert str(default_run["run_dir"]) in config_text and "${" not in config_text  # resolved


def test_results_table_hides_per_class_values_unless_verbose() -> None:
    from rich.console import Console

    from imagelab.tracking.console import results_table

    metrics = {"val/acc": 0.9, "test/acc": 0.8, "test/acc_class/cat": 0.7, "test/loss": 0.3, "model/x": 1}

    def text(verbose: bool) -> str:
        console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(results_table(metrics, verbose))
        return console.export_text()

    assert "acc_class/cat" not in text(False) and "acc_class/cat" in text(True)
    assert "loss" not in text(True) and "0.8000" in text(False)


def test_noise_filter_is_narrow() -> None:
    from imagelab.tracking.console import is_noise

    assert is_noise("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert is_noise("TPU available: False, using: 0 TPU cores")
    assert not is_noise("GPU available: False, used: False")
    assert not is_noise("The number of training batches (8) is smaller than the logging interval")
    assert not is_noise("Epoch 3: val/psnr reached 💡 Tip: in the middle")  # only at the start


def test_lr_curves_are_named_by_parameter_group() -> None:
    from imagelab.callbacks.lr_monitor import rename_lr_stats

    stats = {"lr-AdamW/head": 1e-3, "lr-AdamW/head_no_decay": 1e-3, "lr-AdamW/backbone": 1e-4,
             "lr-AdamW/backbone_no_decay": 1e-4}  # fmt: skip
    assert rename_lr_stats(stats) == {"lr/head": 1e-3, "lr/backbone": 1e-4}
    assert rename_lr_stats({"lr-SGD/layer1": 0.1, "lr-SGD/layer1_no_decay": 0.2}) == {
        "lr/layer1": 0.1,
        "lr/layer1_no_decay": 0.2,
    }
    two_optimizers = {"lr-Adam": 1e-3, "lr-SGD": 1e-2}
    assert rename_lr_stats(two_optimizers) == two_optimizers


def test_confident_errors_are_spread_over_classes() -> None:
    import torch

    from lightning_modules.error_gallery import ConfidentErrors

    errors = ConfidentErrors(total=4, num_classes=3)
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    logits = torch.zeros(8, 3)
    logits[:5, 1] = torch.tensor([1.0, 5.0, 2.0, 4.0, 3.0])  # class 0 mistaken for 1, confidence rising
    logits[5:7, 2] = torch.tensor([2.0, 6.0])  # class 1 mistaken for 2
    logits[7, 2] = 9.0  # class 2 right
    errors.offer(images, labels, logits)
    chosen = errors.select()
    assert [t for _, t, _, _ in chosen] == [1, 0, 1, 0]  # round-robin, the most confident class first
    assert [int(img.item()) for img, _, _, _ in chosen] == [6, 1, 5, 3]  # most confident first in each class
    assert all(p != t for _, t, p, _ in chosen)


def test_model_summary_keeps_modules_with_parameters() -> None:
    from imagelab.callbacks.model_summary import parameter_rows

    data = [
        (" ", ["0", "1", "2"]),
        ("Name", ["net", "loss_fn", "val_psnr"]),
        ("Type", ["DnCNN", "MSELoss", "PeakSignalNoiseRatio"]),
        ("Params", ["7.3 K", "0", "0"]),
        ("Mode", ["train", "train", "train"]),
        ("FLOPs", ["0", "0", "0"]),
    ]
    assert parameter_rows(data) == (["Name", "Type", "Params"], [["net", "DnCNN", "7.3 K"]])
