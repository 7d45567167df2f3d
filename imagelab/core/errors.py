"""The one exception type for user mistakes, so entry points can report them in a single line."""

from __future__ import annotations

import signal


class UserError(Exception):
    """A mistake the user can fix (bad config value, missing file, wrong checkpoint, no network).

    Its message is one line that says what is wrong and how to fix it; entry points print it as
    ``error: <message>`` and exit with status 2 instead of showing a traceback.
    """


class TrainingDiverged(Exception):
    """The loss or the weights became NaN/inf; the message names the step, the epoch and the value."""


class RunInterrupted(BaseException):
    """The run was stopped by a signal (SIGTERM from SLURM/Kubernetes/``timeout``, or Ctrl+C = SIGINT).

    A ``BaseException`` like ``KeyboardInterrupt``: a sweep stops too instead of going on to its next job.
    """

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        self.where = where
        super().__init__(f"interrupted by {self.signal_name}{' ' + where if where else ''}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + the signal number (143, 130)."""
        return 128 + self.signum


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name), for one-line error reports."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
