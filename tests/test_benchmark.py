"""scripts/benchmark.py: the smoke plan runs on CPU and writes a complete report; goals are only reported."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagelab.core.errors import UserError
from imagelab.tasks.benchmark.timm_compare import SKIPPED
from tests.helpers.paths import SCRIPTS
from tests.helpers.runs import run_script


@pytest.mark.slow
def test_smoke_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = run_script("benchmark.py", "mode=smoke", f"hydra.run.dir={out}", cwd=tmp_path, timeout=300)
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "smoke" and report["machine"]["cpu_count"] >= 1
    assert report["partial"] is False  # written after every section with partial=true, then complete
    assert [row["model"] for row in report["overhead"]] == [
        "denoiser (toy DnCNN)",
        "timm test_resnet",
        "tiny denoiser (DnCNN 2 x 1, 8 px, batch 8)",
        "tiny classifier (small CNN 2 ch, 32 px, batch 8)",
    ]
    for row in report["overhead"]:
        assert row["framework_median"] > 0 and row["bare_median"] > 0
        assert row["framework_ms_per_step"] > 0 and row["bare_ms_per_step"] > 0
        assert row["overhead_ms"] == pytest.approx(row["framework_ms_per_step"] - row["bare_ms_per_step"])
        assert row["overhead_cpu_ms"] == pytest.approx(
            row["framework_cpu_ms_per_step"] - row["bare_cpu_ms_per_step"]
        )
        # the near-zero-compute rows carry the ms/step goal and the Lightning-alone reference run
        assert (row["overhead_goal_ms"] is not None) == row["model"].startswith("tiny")
        assert (row["lightning_alone"] is not None) == row["model"].startswith("tiny")
        assert row["ratio"] == pytest.approx(statistics.median(row["ratio_per_pair"]))
        assert row["ratio_of_best"] == pytest.approx(row["bare_best"] / row["framework_best"])
        assert 0 < row["first_step_in_process_s"] < 120
    for row in report["overhead"][2:]:  # the tiny rows: what each part costs per step
        parts = {c["part"]: c for c in row["step_costs"]}
        assert parts["callback GracefulInterrupt"]["calls_per_step"] == 1.0
        assert any(p.startswith("Lightning's dispatch over") for p in parts)
        assert all(c["cpu_ms_per_step"] >= 0 for c in row["step_costs"])
    assert [row["step_costs"] for row in report["overhead"][:2]] == [None, None]
    alone = report["overhead"][2]["lightning_alone"]
    assert alone["bare_ms_per_step"] > 0 and alone["framework_ms_per_step"] > 0
    assert len(report["data"]) == 4
    for row in report["data"]:
        assert row["images_per_s"] > 0 and row["data_over_model"] > 0
    assert 0 < report["startup"]["cfg_job_median_s"] < 60
    variants = report["fast_paths"]["variants"]
    assert variants[0]["variant"].startswith("baseline") and variants[0]["speedup"] == 1.0
    assert {r["data_path"] for r in report["fast_paths"]["resident_vs_loader"]} == {"loader", "resident"}
    assert report["memory"]["peak_rss_benchmark_process_bytes"] > 100 * 2**20
    # goals are reported, not asserted: in smoke mode only the --cfg job goal applies
    applies = {g["goal"].split(":")[0]: g["applies"] for g in report["goals"]}
    assert applies["scripts/train.py --cfg job < 1.5 s"] is True
    assert not any(g["applies"] for g in report["goals"] if "ratio" in g["goal"] or "GPU" in g["goal"])
    ms_goals = [g for g in report["goals"] if "ms/step" in g["goal"]]
    assert len(ms_goals) == 4 and not any(
        g["applies"] for g in ms_goals
    )  # framework - bare, - Lightning alone
    own = [g for g in ms_goals if "Lightning alone" in g["goal"]]
    alone = report["overhead"][2]["lightning_alone"]
    wall = report["overhead"][2]["overhead_ms"] - alone["overhead_ms"]
    assert own[0]["value"].split(" / ")[0] == f"{wall:.3f}"
    markdown = (out / "report.md").read_text()
    for heading in (
        "## Goals",
        "## Framework vs bare PyTorch",
        "## Data throughput",
        "## Start-up",
        "## Fast paths",
        "### Where the per-step overhead goes",
        "### Per-step cost of each part",
    ):
        assert heading in markdown
    assert report["timm_train"] == {"skipped": SKIPPED} and SKIPPED in markdown  # no timm train.py given
    assert not (out / "work").exists(), "framework run folders are removed unless keep_runs=true"
    assert "report:" in proc.stdout and ("PASS" in proc.stdout or "FAIL" in proc.stdout)


def test_cfg_job_of_the_benchmark_script_stays_light(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPTS / "benchmark.py"), "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0 and "mode: auto" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "lightning" not in imported


def test_goals_and_markdown_from_a_report() -> None:
    from imagelab.tasks.benchmark.plan import merge_overrides
    from imagelab.tasks.benchmark.report import evaluate_goals, render_markdown

    assert merge_overrides(["a=1", "b=2"], ["a=3", "+c=4"]) == ["a=3", "b=2", "+c=4"]
    report = {
        "mode": "gpu",
        "command": "benchmark.py",
        "started": "now",
        "duration_s": 1.0,
        "machine": {
            "platform": "test",
            "cpu_count": 2,
            "torch_threads": 2,
            "load_average": [0.5, 0.5, 0.5],
            "cuda_device": "fake",
            "torch": "x",
            "lightning": "y",
        },
        "overhead": [
            {
                "model": "m",
                "batch_size": 8,
                "ratio": 1.2,
                "ratio_of_best": 1.2,
                "ratio_of_medians": 1.1,
                "ratio_per_pair": [1.2],
                "framework_median": 10.0,
                "bare_median": 12.0,
                "framework_best": 10.0,
                "bare_best": 12.0,
                "first_step_in_process_s": 1.0,
            }
        ],
        "data": [
            {
                "data": "d",
                "batch_size": 8,
                "images_per_s": 400.0,
                "model": "m",
                "model_images_per_s": 80.0,
                "data_over_model": 5.0,
            },
            {
                "data": "e",
                "batch_size": 8,
                "images_per_s": 100.0,
                "model": "m",
                "model_images_per_s": 80.0,
                "data_over_model": 1.25,
            },
        ],
        "startup": {
            "cfg_job_s": [2.0],
            "cfg_job_median_s": 2.0,
            "first_step_cold_s": [],
            "first_step_cold_median_s": math.nan,
            "first_step_model": None,
            "peak_rss_cold_run_bytes": None,
        },
        "fast_paths": {
            "variants": [],
            "resident_vs_loader": [
                {"model": "m", "data_path": "loader", "steps_per_s": 10.0, "images_per_s": 80.0},
                {"model": "m", "data_path": "resident", "steps_per_s": 15.0, "images_per_s": 120.0},
            ],
        },
        "memory": {"peak_rss_benchmark_process_bytes": 2**30, "peak_device_bytes": None},
    }
    goals = {g["goal"]: g for g in evaluate_goals(report)}
    ratio = goals["framework/bare ratio <= 1.03 on CPU: m"]
    assert ratio["applies"] is False and ratio["pass"] is False  # a GPU run does not judge the CPU goal
    assert goals["scripts/train.py --cfg job < 1.5 s"]["pass"] is False
    assert goals["data >= 3.0x model on GPU: d"]["pass"] and not goals["data >= 3.0x model on GPU: e"]["pass"]
    assert goals["GPU-resident data beats the loader path on GPU: m"] == {
        "goal": "GPU-resident data beats the loader path on GPU: m",
        "value": 1.5,
        "applies": True,
        "pass": True,
    }
    report["goals"] = list(goals.values())
    markdown = render_markdown(report)
    assert "| m | 8 | 10.00 / 10.00 | 12.00 / 12.00 | **1.200** | 1.200 | 1.200 / 1.100 | - | - |" in markdown
    assert "skipped in this mode" in markdown and "PARTIAL" not in markdown
    report["partial"] = True  # a run stopped by a time limit says so at the top
    assert render_markdown(report).startswith("# Benchmark (gpu mode) - PARTIAL: stopped before the end")


def test_timers_and_bad_arguments(tmp_path: Path) -> None:
    import torch

    from imagelab.tasks.benchmark.runner import run_benchmark
    from imagelab.tasks.benchmark.timing import FirstStepTimer, StepTimer

    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), is_global_zero=True)
    timer = StepTimer(warmup=1, steps=3)
    for i in range(5):
        timer.on_train_batch_start(trainer, None, None, i)  # type: ignore[arg-type]
    assert timer.first_step is not None and timer.steps_per_s is not None and timer.steps_per_s > 0
    stamp = tmp_path / "first.json"
    first = FirstStepTimer(str(stamp))
    first.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    first.teardown(trainer, None, "fit")  # type: ignore[arg-type]
    record = json.loads(stamp.read_text())
    assert record["first_step_unix"] > 0 and record["peak_rss_bytes"] > 10 * 2**20
    assert "torch" in record["third_party_modules"] and "imagelab" not in record["third_party_modules"]
    from imagelab.tasks.benchmark.sections import startup_breakdown

    split = startup_breakdown(["json", "no_such_module"], 1, 5.0, dict(os.environ), tmp_path)
    assert 0 < split["python_start_s"] < 5 and 0 <= split["imports_s"] < 5
    assert split["own_s"] == pytest.approx(5.0 - split["python_start_s"] - split["imports_s"])
    assert startup_breakdown([], 1, 5.0, {}, tmp_path)["own_s"] is None  # no cold run: no split
    from imagelab.tasks.benchmark.timm_compare import timm_train_section, write_digits_32px

    with pytest.raises(UserError, match=r"no_train\.py: no such file; set timm_train_script="):
        timm_train_section(str(tmp_path / "no_train.py"), 1, 1, tmp_path)
    digits = write_digits_32px(tmp_path / "digits")
    counts = [len(list((digits / split).rglob("*.png"))) for split in ("train", "val")]
    assert sum(counts) == 1797 and counts[1] == 364  # every 5th image of each class validates
    with pytest.raises(UserError, match="mode must be one of"):
        run_benchmark(mode="tpu", out_dir=tmp_path)
    with pytest.raises(UserError, match="unknown benchmark section"):
        run_benchmark(mode="smoke", out_dir=tmp_path, sections=["speed"])
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            run_benchmark(mode="gpu", out_dir=tmp_path)


def test_step_overhead_from_step_durations() -> None:
    from imagelab.tasks.benchmark.plan import select_variants
    from imagelab.tasks.benchmark.step_overhead import (
        chunk_means_ms,
        overhead_ms,
        robust_ms_per_step,
        window_overhead_ms,
    )

    assert chunk_means_ms([0.001] * 5 + [0.003] * 5 + [0.5], chunk=5) == pytest.approx(
        [1.0, 3.0]
    )  # tail dropped
    # a chunk slowed down by another process is outvoted; the periodic logging step inside each chunk is kept
    steady = ([0.002] * 9 + [0.012]) * 5
    disturbed = steady[:10] + [0.050] * 10 + steady[20:]
    assert robust_ms_per_step([disturbed], chunk=10) == pytest.approx(3.0)
    bare = [[0.001] * 50, [0.001] * 50]
    fw = [[0.0025] * 50, [0.0030] * 50]
    result = overhead_ms(fw, bare, fw, bare)
    assert result["chunk_steps"] == 50 and result["overhead_ms_per_pair"] == pytest.approx([1.5, 2.0])
    assert result["overhead_ms"] == pytest.approx(1.75) and result["overhead_cpu_ms"] == pytest.approx(1.75)
    assert overhead_ms([[0.002] * 4], [[0.001] * 4])["chunk_steps"] == 4  # short smoke runs: one chunk
    window = window_overhead_ms([400.0, 500.0], [1000.0, 1000.0])
    assert window["overhead_ms"] == pytest.approx(1.25) and math.isnan(window["overhead_cpu_ms"])
    variants = [("baseline (fp32)", ["a"]), ("+ bf16-mixed", ["b"]), ("+ torch.compile", ["c"])]
    assert select_variants(variants, ["baseline", "bf16"]) == variants[:2]
    with pytest.raises(UserError, match="matches nothing"):
        select_variants(variants, ["tf32"])


@pytest.mark.parametrize(
    "mode", sorted(p.stem for p in (SCRIPTS.parent / "conf" / "benchmark").glob("*.yaml"))
)
def test_every_benchmark_plan_loads(mode: str, tmp_path: Path) -> None:
    from imagelab.tasks.benchmark.plan import load_plan
    from imagelab.tasks.benchmark.runner import modes

    assert mode in modes()
    plan = load_plan(mode, tmp_path / "cifar", repeats=None)
    assert plan.mode == mode and plan.device in ("cpu", "cuda") and plan.repeats >= 1
    names = [case.name for case in plan.models]
    assert (
        len(set(names)) == len(names) and sum(case.overhead_goal_ms is not None for case in plan.models) == 2
    )
    for case in [*plan.models, *plan.fast_path_models]:
        assert all(isinstance(o, str) and "=" in o and "${" not in o for o in case.overrides), case.name
        assert case.batch_size >= 1 and case.steps >= 1 and case.kind in ("denoiser", "classifier")
        if case.kind == "classifier":  # the benchmark's own CIFAR-shaped files, never a download
            assert (
                f"data.root={tmp_path / 'cifar'}" in case.overrides
                and "data.download=false" in case.overrides
            )
    assert plan.data and all(case.feeds in names for case in plan.data)
    assert not plan.fast_path_models or plan.fast_path_variants[0][0].startswith("baseline")
    assert load_plan(mode, tmp_path, repeats=7).repeats == 7


def test_a_bad_benchmark_plan_is_a_user_error(tmp_path: Path) -> None:
    from imagelab.tasks.benchmark.plan import load_plan

    good = (SCRIPTS.parent / "conf" / "benchmark" / "smoke.yaml").read_text()
    cases = {
        "typo": good.replace("cfg_job_repeats:", "cfg_jobs_repeats:"),
        "feeds": good.replace("feeds: *denoiser", "feeds: no such model", 1),
        "steps": good.replace("steps: 4", "steps: 0", 1),
        "override": good.replace("[model.net.depth=3,", "[3,", 1),
    }
    messages = {
        "typo": "unknown key",
        "feeds": "not a model of the plan",
        "steps": "steps must be a positive integer",
        "override": "must be a string",
    }
    for name, text in cases.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        with pytest.raises(UserError, match=messages[name]):
            load_plan(name, tmp_path / "cifar", plan_dir=tmp_path)
    with pytest.raises(UserError, match="no benchmark plan"):
        load_plan("tpu", tmp_path / "cifar", plan_dir=tmp_path)
