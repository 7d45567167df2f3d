"""Dashboard as code: a saved W&B workspace for a project or one sweep (the ``wandb-workspaces`` library).

:func:`build_workspace` lays out the panels (docs/wandb.md says what each one answers):

* **Objective**: the objective against epoch for every run, the training loss, the learning-rate curves;
* **Sweep**: parallel coordinates of the swept parameters against the objective's best value, W&B's
  parameter importance for that value, and a run comparer of the configs (differences only);
* **Images**: the media browser over the image panels (denoiser: ``val/panels``; classifier:
  ``test/confusion_matrix``, ``test/misclassified``);
* **Per-image results**: the ``test/images`` table (``imagelab.tracking.wandb_tables``).

The runs are filtered on the sweep's W&B group and sorted by the objective's best value. The swept parameters
and the objective are read from the sweep's folder (``outputs/<task>/multiruns/<time>``: each job's
``.hydra/overrides.yaml`` and ``metrics.json``) when it is on this machine; ``params=`` and ``metric=`` name
them otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from omegaconf import OmegaConf
from wandb_workspaces.workspaces import internal

from imagelab.core.constants import HYDRA_DIR, METRICS_FILE
from imagelab.core.errors import UserError

IGNORED_OVERRIDE_PREFIXES = ("hydra.", "paths.", "logger.", "tags", "task_name")
DENOISER_MEDIA = ["val/panels"]
CLASSIFIER_MEDIA = ["test/confusion_matrix", "test/misclassified"]
TABLE_KEY = "test/images"


@dataclass
class DashboardPlan:
    """What the workspace shows: project, optional sweep group, objective, swept parameters, image keys."""

    project: str
    entity: str = ""
    group: str | None = None
    metric: str = "val/psnr"
    mode: str = "max"
    params: list[str] = field(default_factory=list)
    media_keys: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def best_key(self) -> str:
        """The objective's summary key that holds its best value (``define_metric`` summary ``max``/``min``)."""
        return f"{self.metric}.{self.mode}"


def find_sweep_dir(group: str, outputs: Path) -> Path | None:
    """The multirun folder whose W&B group is ``group`` (``<job name>-<folder name>``), if it is on disk."""
    for folder in sorted(Path(outputs).glob("*/multiruns/*")):
        if not folder.is_dir() or not group.endswith(f"-{folder.name}"):
            continue
        job_name = folder.parent.parent.name
        multirun = folder / "multirun.yaml"
        if multirun.is_file():
            job_name = str(OmegaConf.load(multirun).hydra.job.name)
        if f"{job_name}-{folder.name}" == group:
            return folder
    return None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / HYDRA_DIR / "overrides.yaml").is_file())


def swept_parameters(sweep_dir: Path) -> list[str]:
    """Config keys whose command-line value differs between the sweep's jobs (output/logging keys excluded)."""
    values: dict[str, set[str]] = {}
    for job in _job_dirs(sweep_dir):
        for override in OmegaConf.load(job / HYDRA_DIR / "overrides.yaml"):
            key, _, value = str(override).partition("=")
            key = key.lstrip("+~")
            if not key.startswith(IGNORED_OVERRIDE_PREFIXES):
                values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items() if len(v) > 1)


def sweep_objective(sweep_dir: Path) -> tuple[str, str] | None:
    """The objective (metric, mode) the sweep's jobs recorded in their ``metrics.json``."""
    for job in _job_dirs(sweep_dir):
        path = job / METRICS_FILE
        if path.is_file():
            objective = json.loads(path.read_text()).get("objective") or {}
            if objective.get("metric") and objective.get("mode"):
                return str(objective["metric"]), str(objective["mode"])
    return None


def media_keys_for(metric: str) -> list[str]:
    """Image panel keys of the model family that reports ``metric``."""
    return DENOISER_MEDIA if any(s in metric for s in ("psnr", "ssim")) else CLASSIFIER_MEDIA


def build_workspace(plan: DashboardPlan) -> Any:
    """The ``wandb_workspaces.workspaces.Workspace`` for ``plan`` (not saved)."""
    objective = [
        wr.LinePlot(title=f"{plan.metric} by epoch", x="epoch", y=[plan.metric]),
        wr.LinePlot(title="training loss", x="Step", y=["train/loss", "train/loss_step"]),
        wr.LinePlot(title="learning rate by parameter group", x="Step", metric_regex="^lr(/.*)?$"),
    ]
    sweep: list[Any] = []
    if plan.params:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p)) for p in plan.params]
        columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(plan.best_key)))
        sweep.append(
            wr.ParallelCoordinatesPlot(title=f"swept parameters -> best {plan.metric}", columns=columns)
        )
    sweep += [wr.ParameterImportancePlot(with_respect_to=plan.best_key), wr.RunComparer(diff_only="split")]
    sections = [
        ws.Section(name="Objective", panels=objective, is_open=True),
        ws.Section(name="Sweep", panels=sweep, is_open=True),
        ws.Section(name="Images", panels=[wr.MediaBrowser(media_keys=plan.media_keys)], is_open=True),
        ws.Section(
            name="Per-image results",
            panels=[wr.WeavePanelSummaryTable(table_name=TABLE_KEY, layout=wr.Layout(w=24, h=12))],
            is_open=True,
        ),
    ]
    runset = ws.RunsetSettings(
        filters=[ws.Metric("Group") == plan.group] if plan.group else "",
        order=[ws.Ordering(ws.Summary(plan.best_key), ascending=plan.mode == "min")],
    )
    name = plan.name or (f"{plan.project}: sweep {plan.group}" if plan.group else f"{plan.project}: runs")
    return ws.Workspace(
        entity=plan.entity, project=plan.project, name=name, sections=sections, runset_settings=runset
    )


def workspace_spec(workspace: Any) -> dict[str, Any]:
    """The workspace as the JSON view spec W&B stores (``wandb-workspaces``' own serialisation)."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def workspace_from_spec(spec: dict[str, Any], entity: str | None = None) -> Any:
    """Rebuild a ``Workspace`` from :func:`workspace_spec` output (``entity`` replaces the stored one)."""
    try:
        view = internal.View.model_validate(spec)
    except Exception as exc:
        raise UserError(f"not a workspace spec written by scripts/wandb_dashboard.py: {exc}") from None
    workspace = ws.Workspace._from_model(view)
    if entity:
        workspace.entity = entity
    return workspace


def plan_dashboard(args: dict[str, str]) -> DashboardPlan:
    """Fill a :class:`DashboardPlan` from the command line and, for a sweep group, from its folder."""
    project = args.get("project")
    if not project:
        raise UserError("project=NAME is required (the W&B project the runs were logged to)")
    group = args.get("group") or None
    metric, mode = args.get("metric"), args.get("mode")
    params = [p for p in (args.get("params") or "").split(",") if p]
    if group:
        sweep_dir = find_sweep_dir(group, Path(args.get("outputs", "outputs")))
        if sweep_dir is not None:
            params = params or swept_parameters(sweep_dir)
            found = sweep_objective(sweep_dir)
            if found is not None:
                metric, mode = metric or found[0], mode or found[1]
        elif not params:
            raise UserError(
                f"no sweep folder for group {group!r} under {args.get('outputs', 'outputs')}/*/multiruns/: "
                "give outputs=DIR, or the swept parameters with params=KEY1,KEY2"
            )
    metric = metric or "val/psnr"
    mode = mode or ("min" if metric.endswith("loss") else "max")
    if mode not in ("min", "max"):
        raise UserError(f"mode={mode!r} must be min or max")
    return DashboardPlan(
        project=project,
        entity=args.get("entity", ""),
        group=group,
        metric=metric,
        mode=mode,
        params=params,
        media_keys=media_keys_for(metric),
        name=args.get("name", ""),
    )
