"""Lightning's SimpleProfiler that also prints a short report (the slowest actions) when a stage ends."""

from __future__ import annotations

import os

from lightning.pytorch.profilers import SimpleProfiler

from imagelab.tracking.console import say


def _short(action: str, width: int = 64) -> str:
    """An action name cut to ``width`` characters (callback names carry their whole config)."""
    action = action.split("{", 1)[0] + ("." + action.rsplit(".", 1)[-1] if "{" in action else "")
    return action if len(action) <= width else action[: width - 1] + "…"


class PrintingSimpleProfiler(SimpleProfiler):
    """``SimpleProfiler`` (same arguments) that writes its full report to ``dirpath/<stage>-<filename>.txt`` as
    usual and prints, on rank zero, the ``max_rows`` actions of the stage that took the most time in total."""

    def __init__(self, *args: object, max_rows: int = 12, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.max_rows = int(max_rows)
        self._printed: dict[str, int] = {}  # durations already reported by an earlier stage

    def describe(self) -> None:
        """Write the report file, then print this stage's slowest actions and where the file is."""
        stage = str(getattr(self._stage, "value", self._stage) or "run")
        path = None
        if self.dirpath is not None and self.filename:
            path = os.path.join(self.dirpath, f"{stage}-{self.filename}.txt")
        rows = []
        for action, durations in self.recorded_durations.items():
            new = durations[self._printed.get(action, 0) :]
            self._printed[action] = len(durations)
            if new:
                rows.append((sum(new), len(new), action))
        super().describe()
        if not rows:
            return
        rows.sort(reverse=True)
        say(
            f"profile of {stage} (slowest of {len(rows)} actions; full report: {path or 'not saved'})",
            f"  {'action (nested ones count inside their parents)':<64} {'calls':>6} {'mean s':>9} {'total s':>9}",
            *(
                f"  {_short(action):<64} {calls:>6} {seconds / calls:>9.4f} {seconds:>9.3f}"
                for seconds, calls, action in rows[: self.max_rows]
            ),
        )
