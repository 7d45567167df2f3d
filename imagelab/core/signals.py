"""Signals that stop a run: the first SIGTERM/SIGINT is recorded, and acted on at a safe point.

:func:`install_signal_handlers` (called by the task wrapper) records the first SIGTERM/SIGINT, and inside a
SLURM job also SIGUSR1 (``sbatch --signal=USR1@90``, ``scancel --signal=USR1``), after which the task wrapper
requeues the job (``imagelab.core.requeue``). While a Trainer runs,
``imagelab.callbacks.graceful_interrupt.GracefulInterrupt`` raises :class:`RunInterrupted` at the end of the
current batch (under DDP: at the next check point, the same step on every process) and saves
``last.ckpt``; outside a Trainer (data loading, model building) the signal interrupts at once. A second Ctrl+C
stops immediately. Light imports only (the task wrapper installs the handlers before torch is imported).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from imagelab.core.errors import RunInterrupted

log = logging.getLogger(__name__)
HANDLED = (signal.SIGTERM, signal.SIGINT)
REQUEUE_SIGNAL = signal.SIGUSR1  # SLURM's warning before the time limit (sbatch --signal=USR1@<seconds>)


class _SignalState:
    """The first signal received, and the Trainer that is running (None between Trainer stages)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the previous run's signal and progress (each job of a sweep starts clean)."""
        self.signum: int | None = None
        self.trainer: Any = None  # the running lightning Trainer
        self.saved_checkpoint: str | None = None
        self.trained_steps = 0  # training steps done in this process (0: a failure left nothing to keep)
        self.pid = os.getpid()  # the process whose run this is (forked workers inherit the handler)


STATE = _SignalState()


def _handler(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != STATE.pid:  # a forked child (data-loader worker) inherited this handler: default action
        if signum == REQUEUE_SIGNAL:
            return  # SLURM signals every process of the step; the run's own process acts on it
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if STATE.signum is not None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now
        return
    STATE.signum = signum
    name = signal.Signals(signum).name
    if STATE.trainer is None:
        raise RunInterrupted(signum)
    print(f"{name} received: stopping after this step and saving last.ckpt", file=sys.stderr, flush=True)


def install_signal_handlers() -> None:
    """Route SIGTERM and SIGINT of this process through the graceful stop (main thread only).

    Inside a SLURM job SIGUSR1 is routed there too, unless something (e.g. submitit with
    ``SUBMITIT_PREEMPT_SIGNAL=USR1``) handles it already; Lightning then leaves it alone as well.
    """
    STATE.reset()
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED:
            signal.signal(signum, _handler)
        if os.environ.get("SLURM_JOB_ID") and signal.getsignal(REQUEUE_SIGNAL) in (signal.SIG_DFL, _handler):
            signal.signal(REQUEUE_SIGNAL, _handler)


def received_signal() -> int | None:
    """The signal that asked this run to stop, or None."""
    return STATE.signum


def sigterm_exception_signal(exc: BaseException) -> int | None:
    """The signal behind Lightning's ``SIGTERMException`` (or our own RunInterrupted), else None."""
    if isinstance(exc, RunInterrupted):
        return exc.signum
    if type(exc).__name__ == "SIGTERMException":
        return STATE.signum or int(signal.SIGTERM)
    return None
