"""A Rich progress bar that redraws at most every ``min_interval_s`` seconds during training.

Lightning's ``RichProgressBar`` reads the progress-bar metrics after every training batch, whatever its
``refresh_rate``: converting the logged loss to a Python float then waits for the GPU (a CUDA sync per step,
which stops the CPU from queueing the next step ahead) and costs about a millisecond of Python per step on CPU.
``TimedRichProgressBar`` skips the update of a training batch unless ``min_interval_s`` has passed since the
last one (the last batch of an epoch is always drawn), so the bar looks the same to a person (a few redraws
per second) while a fast GPU run reads the metrics a few times per second instead of every step.

The metrics are drawn as one line under the bars (Lightning draws them as the last column of the bar, which a
terminal of ordinary width wraps into a one-word-wide column), without Lightning's ``v_num``.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar
from rich.text import Text

from imagelab.core.errors import UserError


class TimedRichProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training bar and metrics are updated at most every ``min_interval_s`` s.

    All other arguments are ``RichProgressBar``'s (``leave``, ``theme``, ``refresh_rate``, ...).
    """

    def __init__(self, *args: Any, min_interval_s: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(min_interval_s, int | float) or min_interval_s < 0:
            raise UserError(
                f"callbacks.rich_progress_bar.min_interval_s must be >= 0, got {min_interval_s!r}"
            )
        self.min_interval_s = float(min_interval_s)
        self._last_draw = -float("inf")

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        """The progress-bar metrics without ``v_num`` (the run's id is printed at the end)."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _init_progress(self, trainer: Any) -> None:
        """Lightning's progress display, with the metrics moved from the last column to a line below."""
        super()._init_progress(trainer)
        progress, column = self.progress, self._metric_component
        if progress is None or column is None or getattr(progress, "_metrics_below", False):
            return
        progress.columns = tuple(c for c in progress.columns if c is not column)

        def get_renderables() -> Any:
            yield progress.make_tasks_table(progress.tasks)
            line = metrics_line(column._metrics) if trainer.state.fn == "fit" else ""
            if line and not trainer.sanity_checking:
                yield Text(line, style=self.theme.metrics, no_wrap=True, overflow="ellipsis")

        progress.get_renderables = get_renderables
        progress._metrics_below = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Update the bar and its metrics if ``min_interval_s`` has passed or the epoch ends."""
        now = time.monotonic()
        last_batch = batch_idx + 1 >= self.total_train_batches
        if now - self._last_draw < self.min_interval_s and not last_batch:
            return
        self._last_draw = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def metrics_line(metrics: dict[str, Any]) -> str:
    """``name value`` pairs on one line, numbers with 4 significant digits."""
    parts = []
    for name, value in metrics.items():
        try:
            parts.append(f"{name} {float(value):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{name} {value}")
    return "  ".join(parts)
