"""A model summary that lists parameters only: the modules that hold some, their type and count.

Lightning's ``RichModelSummary`` also lists every zero-parameter module (the torchmetrics metrics, the loss),
their train/eval mode and a FLOPs column that stays 0 unless FLOPs are measured. The totals are printed
once by ``imagelab.callbacks.parameter_count.ParameterCountLogger`` right after this table.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from rich import get_console
from rich.table import Table

_KEPT_COLUMNS = ("Name", "Type", "Params", "Params per Device")


def parameter_rows(summary_data: list[tuple[str, list[str]]]) -> tuple[list[str], list[list[str]]]:
    """Columns kept (name, type, params) and the rows of the modules whose parameter count is not 0."""
    columns = [(name, values) for name, values in summary_data if name in _KEPT_COLUMNS]
    names = [name for name, _ in columns]
    rows = [list(row) for row in zip(*(values for _, values in columns), strict=True)]
    params_at = names.index("Params") if "Params" in names else None
    if params_at is not None:
        rows = [row for row in rows if row[params_at].strip() not in ("0", "0 ")]
    return names, rows


class ParameterSummary(RichModelSummary):
    """``RichModelSummary`` (same ``max_depth``) printing only the modules with parameters, no FLOPs/mode."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        """Print the table of the modules with parameters."""
        names, rows = parameter_rows(summary_data)
        table = Table(header_style=summarize_kwargs.get("header_style", "bold"), box=None, pad_edge=False)
        for name in names:
            table.add_column(name, justify="right" if name.startswith("Params") else "left", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        get_console().print(table)
