"""scripts/wandb_dashboard.py offline, for a finished two-job test sweep: the workspace spec file holds the
objective, parallel-coordinates, parameter-importance, media and table panels, filtered on the sweep's group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.overrides import FAST_DENOISE
from tests.helpers.runs import read_metrics, run_script

TINY = [
    *FAST_DENOISE,
    "trainer.max_epochs=1",
    "data.patches_per_epoch=64",
    "data.eval_crop=64",
    "model.net.depth=3",
    "model.net.width=8",
    "print_config=false",
]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_script("train.py", "-m", *TINY, "model.optimizer.lr=1e-3,3e-3", "tags=[pytest]", cwd=root)
    jobs = sorted((root / "outputs" / "train" / "multiruns").glob("*/[0-9]"))
    groups = {read_metrics(job)["wandb"]["group"] for job in jobs}
    assert len(jobs) == 2 and len(groups) == 1
    group = groups.pop()
    proc = run_script("wandb_dashboard.py", "project=imagelab", f"group={group}", "wandb=offline", cwd=root)
    spec_files = list((root / "outputs" / "dashboards").glob("*.json"))
    assert len(spec_files) == 1
    return {
        "root": root,
        "group": group,
        "stdout": proc.stdout,
        "spec": json.loads(spec_files[0].read_text()),
    }


def _panels(spec: dict) -> dict[str, list[dict]]:
    sections = spec["workspace"]["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: s["panels"] for s in sections}


@pytest.mark.slow
def test_offline_spec_has_the_sweep_panels(dashboard: dict) -> None:
    spec = dashboard["spec"]
    assert spec["group"] == dashboard["group"] and spec["params"] == ["model.optimizer.lr"]
    assert (spec["metric"], spec["mode"]) == ("val/psnr", "max")  # read from the jobs' metrics.json
    panels = _panels(spec)
    objective = panels["Objective"][0]["config"]
    assert panels["Objective"][0]["viewType"] == "Run History Line Plot" and objective["metrics"] == [
        "val/psnr"
    ]
    assert objective["xAxis"] == "epoch"
    kinds = {p["viewType"]: p["config"] for p in panels["Sweep"]}
    columns = [c["accessor"] for c in kinds["Parallel Coordinates Plot"]["columns"]]
    assert columns == ["config:model.value.optimizer.lr", "summary:val/psnr.max"]
    assert kinds["Parameter Importance"]["targetKey"] == "val/psnr.max"
    assert "Run Comparer" in kinds
    assert panels["Images"][0]["config"]["mediaKeys"] == ["val/panels"]
    assert "test/images" in json.dumps(panels["Per-image results"][0]["config"])
    assert "wandb sync" not in dashboard["stdout"] and "spec=" in dashboard["stdout"]


@pytest.mark.slow
def test_runs_are_filtered_on_the_sweep_group_and_sorted_by_the_objective(dashboard: dict) -> None:
    runset = dashboard["spec"]["workspace"]["spec"]["section"]["runSets"][0]
    leaves = runset["filters"]["filters"]
    assert leaves == [
        {
            "disabled": False,
            "key": {"name": "group", "section": "run"},
            "op": "=",
            "value": dashboard["group"],
        }
    ]
    assert runset["sort"]["keys"][0] == {
        "ascending": False,
        "key": {"name": "val/psnr.max", "section": "summary"},
    }


@pytest.mark.slow
def test_spec_file_rebuilds_the_same_workspace(dashboard: dict) -> None:
    from imagelab.tasks.dashboard import workspace_from_spec, workspace_spec

    workspace = workspace_from_spec(dashboard["spec"]["workspace"], entity="someone")
    assert workspace.entity == "someone" and workspace.project == "imagelab"
    rebuilt = workspace_spec(workspace)["spec"]["section"]["panelBankConfig"]["sections"]
    assert [len(s["panels"]) for s in rebuilt] == [len(p) for p in _panels(dashboard["spec"]).values()]


@pytest.mark.slow
def test_unknown_group_and_missing_project_are_one_line_errors(dashboard: dict) -> None:
    proc = run_script(
        "wandb_dashboard.py",
        "project=imagelab",
        "group=train-nope",
        "wandb=offline",
        cwd=dashboard["root"],
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: no sweep folder for group 'train-nope'")
    proc = run_script(
        "wandb_dashboard.py", "group=x", "wandb=offline", cwd=Path(dashboard["root"]), check=False
    )
    assert proc.returncode == 2 and "project=NAME is required" in proc.stderr


def test_project_dashboard_without_a_sweep_has_no_filter() -> None:
    from imagelab.tasks.dashboard import build_workspace, plan_dashboard, workspace_spec

    plan = plan_dashboard({"project": "imagelab", "metric": "val/acc"})
    assert plan.mode == "max" and plan.media_keys == ["test/confusion_matrix", "test/misclassified"]
    spec = workspace_spec(build_workspace(plan))
    sweep = [p["viewType"] for p in spec["spec"]["section"]["panelBankConfig"]["sections"][1]["panels"]]
    assert sweep == ["Parameter Importance", "Run Comparer"]  # no swept parameters: no parallel coordinates
    assert not spec["spec"]["section"]["runSets"][0]["filters"]["filters"]
