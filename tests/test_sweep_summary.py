"""scripts/summarize.py on hand-made job folders: ranking, failed/unfinished/pruned jobs, CSV, plots, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from imagelab.core.errors import UserError
from imagelab.sweeps.summary.collect import collect
from imagelab.sweeps.summary.labels import metric_label, param_label, use_log_scale
from imagelab.sweeps.summary.report import write_summary
from tests.helpers.runs import run_script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_job(sweep: Path, name: str, overrides: list[str], record: dict | None) -> Path:
    """A job folder as Hydra and run_task leave it (``record`` None = no metrics.json: unfinished)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"name": "train"}, "runtime": {"cwd": str(sweep.parent)}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (job / ".hydra" / "config.yaml").write_text("seed: 1\n")
    if record is not None:
        (job / "metrics.json").write_text(json.dumps(record))
    return job


def finetune_record(acc: float | None, trainable: int, status: str = "completed", **extra: float) -> dict:
    metrics = {"val/acc": acc, "test/acc": acc, "model/params_trainable": trainable}
    metrics |= {
        "model/params_total": 100_000,
        "model/params_trainable_fraction": trainable / 100_000,
        **extra,
    }
    return {
        "status": status,
        "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
        "objective": {"metric": "val/acc", "mode": "max", "best": math.nan if acc is None else acc},
        "metrics": metrics if status == "completed" else {},
        "wandb": {"id": f"run{trainable}", "mode": "offline", "url": None},
        "duration_s": 12.5,
    }


@pytest.fixture
def finetune_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "2024-01-01_00-00-00"
    common = ["model=classifier", "hparams_search=classifier_optuna"]
    make_job(
        sweep, "0", ["model.optimizer.lr=1e-4", "model.finetune.rank=4", *common], finetune_record(0.70, 1000)
    )
    make_job(
        sweep, "1", ["model.optimizer.lr=1e-3", "model.finetune.rank=8", *common], finetune_record(0.80, 2000)
    )
    make_job(
        sweep,
        "2",
        ["model.optimizer.lr=1e-2", "model.finetune.rank=32", *common],
        finetune_record(0, 0, "failed"),
    )
    make_job(sweep, "3", ["model.optimizer.lr=3e-3", "model.finetune.rank=16", *common], None)
    make_job(
        sweep, "4", ["model.optimizer.lr=5e-3", "model.finetune.rank=4", *common], finetune_record(None, 1000)
    )
    pruned = finetune_record(0.75, 4000, **{"optuna/pruned_at_epoch": 2.0, "optuna/trial_number": 5.0})
    make_job(sweep, "5", ["model.optimizer.lr=2e-4", "model.finetune.rank=16", *common], pruned)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_collect_ranks_finished_jobs_and_sets_the_others_aside(finetune_sweep: Path) -> None:
    summary = collect(finetune_sweep)
    assert summary.metric == "val/acc" and summary.mode == "max"
    assert summary.swept == ["model.optimizer.lr", "model.finetune.rank"]
    assert summary.fixed == ["model", "hparams_search"]
    assert [j.name for j in summary.ranked] == ["1", "5", "0"]
    assert summary.best is not None and summary.best.name == "1"
    statuses = {j.name: (j.status, j.error) for j in summary.not_ranked}
    assert statuses["2"] == ("failed", "RuntimeError: CUDA out of memory")
    assert statuses["3"][0] == "unfinished" and "no metrics.json" in statuses["3"][1]
    assert statuses["4"][0] == "completed" and "not a finite number" in statuses["4"][1]
    assert {j.name: j.status for j in summary.ranked}["5"] == "pruned"
    assert summary.best.params["model.optimizer.lr"] == pytest.approx(1e-3)
    assert summary.best.command() == (
        "python scripts/train.py model.optimizer.lr=1e-3 model.finetune.rank=8 model=classifier "
        "hparams_search=classifier_optuna"
    )


def test_write_summary_makes_table_csv_and_plots_including_accuracy_vs_trainable(
    finetune_sweep: Path,
) -> None:
    summary = write_summary(finetune_sweep)
    md = (finetune_sweep / "summary.md").read_text()
    assert "**Best job: 1**" in md and "python scripts/train.py model.optimizer.lr=1e-3" in md
    assert "## Failed and unfinished jobs" in md and "CUDA out of memory" in md and "no metrics.json" in md
    table = md.split("## Jobs ranked by the objective")[1].split("##")[0]
    assert table.index("| 1 | 1 |") < table.index("| 2 | 5 | pruned |") < table.index("| 3 | 0 |")
    with open(finetune_sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["1", "5", "0", "2", "3", "4"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "", "", ""]
    assert rows[0]["model/params_trainable"] == "2000" and rows[3]["status"] == "failed"
    plots = sorted(p.name for p in (finetune_sweep / "plots").glob("*.png"))
    assert plots == [
        "accuracy_vs_trainable_params.png",
        "objective_vs_model.finetune.rank.png",
        "objective_vs_model.optimizer.lr.png",
    ]
    assert all((finetune_sweep / "plots" / p).read_bytes()[:8] == PNG_MAGIC for p in plots)
    assert {p.name for p in summary.files} == {"summary.md", "summary.csv", *plots}
    assert not list(finetune_sweep.rglob("*.tmp*")), "temporary files left behind"


def test_rank_by_another_metric_and_direction(finetune_sweep: Path) -> None:
    summary = collect(finetune_sweep, metric="model/params_trainable", mode="min")
    assert [j.name for j in summary.ranked] == ["0", "4", "1", "5"]  # job 4 has no val/acc but a count
    assert all(j.error is None for j in summary.ranked)


def test_axis_labels_carry_units_and_learning_rates_use_a_log_scale() -> None:
    assert use_log_scale("model.optimizer.lr", [1e-3, 3e-3])
    assert use_log_scale("model.optimizer.weight_decay", [1e-5, 1e-4])
    assert use_log_scale("model.net.width", [1, 1000])  # two decades or more
    assert not use_log_scale("data.noise.sigma", [15, 25])
    assert not use_log_scale("model.net.name", ["dncnn", "unet"])
    assert param_label("model.optimizer.lr", True) == "model.optimizer.lr — learning rate (log scale)"
    assert "σ (0-255 scale)" in param_label("data.noise.sigma", False)
    assert metric_label("val/psnr", "max") == "val/psnr (dB), higher is better"
    assert metric_label("val/acc", "max") == "val/acc (0-1), higher is better"


def test_a_sweep_where_nothing_finished_still_gets_a_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", ["model.optimizer.lr=1e-3"], None)
    make_job(sweep, "1", ["model.optimizer.lr=1e-2"], finetune_record(0, 0, "failed"))
    summary = write_summary(sweep)
    assert summary.best is None
    assert "No job finished with an objective value" in (sweep / "summary.md").read_text()
    assert not list((sweep / "plots").glob("*.png")) if (sweep / "plots").exists() else True


def test_not_a_sweep_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no job folders"):
        collect(tmp_path)
    proc = run_script("summarize.py", str(tmp_path / "missing"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "is not a folder" in proc.stderr


def test_per_class_columns_only_for_the_worst_classes_of_the_best_job(tmp_path: Path) -> None:
    sweep = tmp_path / "cifar100"
    for job, (lr, acc) in enumerate([("1e-3", 0.6), ("1e-2", 0.5)]):
        per_class = {f"test/acc_class/c{i:02d}": acc + (i % 50) / 100 - 0.2 for i in range(100)}
        make_job(sweep, str(job), [f"model.optimizer.lr={lr}"], finetune_record(acc, 1000, **per_class))
    write_summary(sweep, per_class_top=3)
    md = (sweep / "summary.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| rank |"))
    per_class = [c.strip() for c in header.split("|") if "acc_class" in c]
    assert per_class == ["test/acc_class/c00", "test/acc_class/c50", "test/acc_class/c01"]  # lowest first
    assert "the 3 worst classes of the best job; all 100 in summary.csv" in md
    with open(sweep / "summary.csv", newline="") as f:
        assert sum("acc_class" in c for c in next(csv.reader(f))) == 100


def test_trainable_parameter_labels_do_not_overlap() -> None:
    import itertools

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from imagelab.sweeps.summary.plots import _readable_count_axis

    for xs, log in (([1.2e4, 2.3e7], True), ([7.5e4, 9.1e4], False)):
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter(xs, [0.5, 0.6])
        if log:
            ax.set_xscale("log")
        _readable_count_axis(ax.xaxis, log)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        area = ax.get_window_extent(renderer)
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = sorted(
            (
                t.get_window_extent(renderer)
                for t in labels
                if area.x0 - 20 <= t.get_window_extent(renderer).x0 <= area.x1
            ),
            key=lambda b: b.x0,
        )
        texts = [t.get_text() for t in labels]
        assert len(boxes) >= 2, texts
        assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes)), texts
        assert all(len(t) <= 5 for t in texts), texts  # 75k, 10M: not 75000 or 1e+07
