"""End to end through the real scripts on real images: scikit-learn's digits written as a PNG class-folder set
(class folders named by words) -> train.py learns them, eval.py reproduces the test accuracy from the
checkpoint alone, predict.py prints the right class names."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from imagelab.tracking.wandb_offline import find_offline_runs, read_offline_run
from tests.helpers.overrides import QUIET
from tests.helpers.runs import read_metrics, run_script, single_run_dir

pytestmark = (
    pytest.mark.slow
)  # every test reads a classifier trained through scripts/train.py or starts a script

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PREDICT_INDICES = [3, 250, 511, 777, 1024, 1300, 1555, 1796]  # images copied again for predict.py

TRAIN = [
    "data=image_folder",
    "data.channels=1",
    "data.image_size=16",
    "data.hflip=false",
    "data.val_fraction=0.2",
    "data.test_fraction=0.2",
    "data.num_workers=0",
    "data.batch_size=64",
    "model=classifier_small_cnn",
    "model.timm_kwargs.widths=[16,32,64]",
    "trainer.max_epochs=4",
    "trainer.accelerator=cpu",
    *QUIET,
    "logger=wandb",
    "callbacks.per_image_table.max_rows=1000",  # every test image in the W&B table
    "tags=[pytest]",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from datamodules.digits import digits_arrays
    from datamodules.image_io import write_image

    root = tmp_path_factory.mktemp("classifier")
    images, labels = digits_arrays()
    folder = root / "digits"
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_image(folder / WORDS[label] / f"digit_{i:04d}.png", image)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: one intra-op thread per script is much faster
        proc = run_script("train.py", *TRAIN, f"data.root={folder}", cwd=root)
    run_dir = single_run_dir(root)
    metrics = read_metrics(run_dir)
    return {"root": root, "run_dir": run_dir, "stdout": proc.stdout, "metrics": metrics, "labels": labels}


def test_learns_the_digits_from_png_class_folders(trained: dict) -> None:
    record, m = trained["metrics"], trained["metrics"]["metrics"]
    assert record["status"] == "completed" and record["objective"]["metric"] == "val/acc"
    # 10 classes (chance 10 %); 4 epochs of the small CNN on 1,079 training digits reach well over 90 %
    assert m["test/acc"] >= 0.90 and m["val/acc_best"] >= 0.90
    assert m["val/acc_best"] >= m["val/acc"] - 1e-6 and record["objective"]["best"] == pytest.approx(
        m["val/acc_best"]
    )
    assert 0.0 <= m["test/f1_macro"] <= 1.0 and m["test/top5"] >= m["test/acc"]
    assert all(f"test/acc_class/{w}" in m for w in WORDS)
    assert m["model/params_trainable"] == m["model/params_total"] > 0


def test_checkpoint_carries_classes_and_preprocessing(trained: dict) -> None:
    import torch

    ckpt = torch.load(trained["metrics"]["best_checkpoint"], map_location="cpu", weights_only=True)
    names = sorted(WORDS)  # folder names, sorted
    assert ckpt["hyper_parameters"]["class_names"] == names
    model_cfg = ckpt["run_config"]["model"]
    assert model_cfg["class_names"] == names and model_cfg["num_classes"] == 10
    assert model_cfg["preprocess"]["image_size"] == [16, 16] and model_cfg["preprocess"]["channels"] == 1
    assert len(model_cfg["preprocess"]["mean"]) == 1  # the backbone's normalisation, reduced to one channel


def test_wandb_run_holds_metrics_and_test_images(trained: dict) -> None:
    runs = find_offline_runs(trained["run_dir"])
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    logged = {k.split("/_type")[0] for row in run["history"] for k in row}
    wanted = {"train/loss_step", "train/acc", "val/acc", "val/acc_best", "val/top5", "val/f1_macro", "val/loss",
              "val/acc_class/seven", "test/acc", "test/top5", "test/f1_macro", "test/confusion_matrix",
              "test/misclassified"}  # fmt: skip
    assert wanted <= logged, sorted(wanted - logged)
    assert run["config"]["model/params_trainable_fraction"] == 1.0
    assert run["summary"]["test/acc"] == pytest.approx(trained["metrics"]["metrics"]["test/acc"], abs=1e-6)
    media = list(Path(runs[0]).rglob("confusion_matrix_*.png")) + list(
        Path(runs[0]).rglob("misclassified_*.png")
    )
    assert len(media) == 2
    # the interactive confusion matrix beside the PNG, and one table row per test image
    chart = run["charts"]["test/confusion_matrix_plot"]
    assert chart["preset"] == "wandb/confusion_matrix/v1"
    cells = run["tables"][chart["table"]]["data"]
    n_test = int(sum(count for _, _, count in cells))
    table = run["tables"]["test/images"]
    assert table["columns"] == ["image", "thumbnail", "true", "predicted", "confidence", "correct", "top_k"]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert len(rows) == n_test > 300 and len({r["image"] for r in rows}) == n_test
    assert all(r["true"] in WORDS and r["correct"] == (r["true"] == r["predicted"]) for r in rows)
    assert all(r["top_k"].startswith(f"{r['predicted']} ") and len(r["top_k"].split(", ")) == 3 for r in rows)
    accuracy = sum(r["correct"] for r in rows) / n_test
    assert accuracy == pytest.approx(trained["metrics"]["metrics"]["test/acc"], abs=1e-6)
    logged_lr = {k for row in run["history"] for k in row if k.startswith("lr")}
    assert logged_lr == {"lr/backbone", "lr/head"}
    assert run["summary"]["val/acc"]["max"] == pytest.approx(trained["metrics"]["metrics"]["val/acc_best"])


def test_eval_reproduces_the_test_accuracy_from_the_checkpoint_alone(trained: dict, tmp_path: Path) -> None:
    ckpt = trained["metrics"]["best_checkpoint"]
    run_script("eval.py", f"ckpt_path={ckpt}", "logger=none", cwd=tmp_path)
    evaluated = read_metrics(single_run_dir(tmp_path, "eval"))
    train_test = trained["metrics"]["metrics"]
    assert evaluated["objective"]["metric"] == "test/acc"
    for key in ("test/acc", "test/f1_macro", "test/top5", "test/acc_class/three"):
        assert evaluated["metrics"][key] == pytest.approx(train_test[key], abs=1e-6), key


def test_predict_prints_the_right_class_names(trained: dict, tmp_path: Path) -> None:
    from datamodules.digits import digits_arrays
    from datamodules.image_io import write_image

    images, labels = digits_arrays()
    inputs = tmp_path / "mine"
    for i in PREDICT_INDICES:
        write_image(
            inputs / f"img_{i}.png", np.kron(images[i], np.ones((4, 4), np.uint8))
        )  # 32 px, resized back
    out_csv = tmp_path / "predictions.csv"
    ckpt = trained["metrics"]["best_checkpoint"]
    proc = run_script(
        "predict.py",
        f"ckpt_path={ckpt}",
        f"input={inputs}",
        "top_k=3",
        f"output={out_csv}",
        "logger=wandb",
        cwd=tmp_path,
    )
    lines = {
        ln.split(": ", 1)[0]: ln.split(": ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("img_")
    }
    assert len(lines) == len(PREDICT_INDICES)
    correct = 0
    for i in PREDICT_INDICES:
        ranked = [item.rsplit(" ", 1) for item in lines[f"img_{i}.png"].split(", ")]
        assert len(ranked) == 3 and all(name in WORDS for name, _ in ranked)
        probs = [float(p) for _, p in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3
        correct += ranked[0][0] == WORDS[labels[i]]
    assert correct >= 7, f"only {correct}/8 digits named correctly:\n{proc.stdout}"
    # logger=wandb: the same predictions as a W&B table, one row per image
    table = read_offline_run(find_offline_runs(tmp_path / "outputs" / "predict")[0])["tables"][
        "predict/images"
    ]
    assert table["columns"] == ["file", "image", "predicted", "confidence", "top_k"]
    assert {row[0]: row[2] for row in table["data"]} == {f: top.split(" ")[0] for f, top in lines.items()}
    with open(out_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "class1", "prob1", "class2", "prob2", "class3", "prob3"] and len(rows) == 9
    from imagelab.core.errors import UserError
    from imagelab.tasks.prediction import list_inputs

    with pytest.raises(UserError, match="does not exist"):
        list_inputs(tmp_path / "nothing")
    with pytest.raises(UserError, match="not an image file"):
        list_inputs(out_csv)
