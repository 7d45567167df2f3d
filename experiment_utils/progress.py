"""A Rich progress bar that redraws at most every ``min_interval_s`` seconds during training.

Lightning's ``RichProgressBar`` reads the progress-bar metrics after every training batch, whatever its
``refresh_rate``: converting the logged loss to a Python float then waits for the GPU (a CUDA sync per step,
which stops the CPU from queueing the next step ahead) and costs about a millisecond of Python per step on CPU.
``TimedRichProgressBar`` skips the update of a training batch unless ``min_interval_s`` has passed since the
last one (the last batch of an epoch is always drawn), so the bar looks the same to a person (a few redraws
per second) while a fast GPU run reads the metrics a few times per second instead of every step.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar

from experiment_utils.errors import UserError


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
