"""The trade-off table: one row per model variant (size, parameters, CPU latency, test metric), written as
``report.json`` and ``report.md``."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from imagelab.core.atomic import atomic_write_json, atomic_write_text
from imagelab.deploy.measure import Runner, latency_ms, max_abs_diff

if TYPE_CHECKING:  # the models behind the kinds stay unimported where exported files are read
    from imagelab.kinds import TaskKind


@dataclass
class Bench:
    """What every variant is measured on: the latency batches, the test split and the fp32 reference."""

    kind: TaskKind
    inputs: Tensor  # real test images, (N, C, H, W): batch N latency and the difference to the reference
    repeats: int
    test_batches: list[tuple[Tensor, Tensor]] | None  # None = no task metric (report.metric=false)
    reference: Runner | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def measure(
        self, variant: str, runtime: str, run: Runner, file: Path | None, params: dict[str, int], **notes: Any
    ) -> dict[str, Any]:
        """Measure one variant and add its row; the first one measured becomes the reference."""
        row: dict[str, Any] = {"variant": variant, "runtime": runtime}
        row["file"] = str(file) if file is not None else None
        row["size_mb"] = round(os.path.getsize(file) / 1e6, 4) if file is not None else None
        row.update(params)
        row["latency_ms_b1"] = round(latency_ms(run, self.inputs[:1], self.repeats), 3)
        n = len(self.inputs)
        row[f"latency_ms_per_image_b{n}"] = round(latency_ms(run, self.inputs, self.repeats) / n, 3)
        if self.reference is None:
            self.reference = run
        row["max_abs_diff_vs_reference"] = max_abs_diff(self.reference, run, self.inputs)
        if self.test_batches is not None:
            row.update(
                {f"test_{k}": round(v, 5) for k, v in self.kind.test_metrics(run, self.test_batches).items()}
            )
        row.update(notes)
        self.rows.append(row)
        return row


def environment() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


COLUMNS = [
    ("variant", "variant"), ("runtime", "runtime"), ("size_mb", "size (MB)"), ("params", "params"),
    ("nonzero_params", "non-zero"),
]  # fmt: skip


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (latency columns and metric columns picked from the rows)."""
    keys = [k for k, _ in COLUMNS]
    keys += sorted(
        {k for r in rows for k in r if k.startswith("latency_ms_")}, key=lambda k: int(k.rsplit("b", 1)[1])
    )
    keys += ["max_abs_diff_vs_reference"]
    keys += sorted({k for r in rows for k in r if k.startswith("test_")})
    titles = dict(COLUMNS) | {"max_abs_diff_vs_reference": "max abs diff vs first row"}
    titles |= {k: f"ms/image (batch {k.rsplit('b', 1)[1]})" for k in keys if k.startswith("latency_ms_")}
    titles |= {k: k.replace("test_", "test ") for k in keys if k.startswith("test_")}

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:,.4g}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(titles.get(k, k) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, rows: list[dict[str, Any]], info: dict[str, Any]) -> Path:
    """Write ``report.json`` (rows, run info, environment) and ``report.md`` into ``out_dir``."""
    env = environment()
    atomic_write_json(
        out_dir / "report.json", {"title": title, "rows": rows, "info": info, "environment": env}
    )
    notes = "".join(f"- {k}: {v}\n" for k, v in info.items())
    text = (
        f"# {title}\n\n{markdown_table(rows)}\n\n"
        "Latency: median wall time of repeated CPU forward passes on real test images, divided by the batch size; "
        "size: the variant's file; "
        "params: stored weight elements (ONNX: every initializer, incl. quantisation scales).\n\n"
        f"{notes}- environment: {env}\n"
    )
    atomic_write_text(out_dir / "report.md", text)
    return out_dir / "report.md"
