"""Plain-text tables of eval.py's scored models (one row per model, one column per metric)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Column(NamedTuple):
    """One metric column: its key in the rows' metrics, its title, its width and its decimals."""

    key: str
    title: str
    width: int = 10
    digits: int = 4


def rows_table(
    rows: Sequence[tuple[str, dict[str, float | None]]],
    columns: Sequence[Column],
    label_width: int = 40,
    first: str = "model",
    missing: float | None = float("nan"),
) -> str:
    """The table of ``rows`` (label, metrics); a metric a row lacks prints as ``missing`` (None: ``-``).

    ``label_width`` is the label column's least width; longer labels widen it, so the columns stay aligned.
    """
    label_width = max(label_width, *(len(label) + 2 for label, _ in rows)) if rows else label_width
    lines = [f"{first:<{label_width}}" + "".join(f"{c.title:>{c.width}}" for c in columns)]
    for label, scores in rows:
        cells = ""
        for c in columns:
            value = scores.get(c.key, missing)
            cells += f"{value:{c.width}.{c.digits}f}" if value is not None else f"{'-':>{c.width}}"
        lines.append(f"{label:<{label_width}}{cells}")
    return "\n".join(lines)
