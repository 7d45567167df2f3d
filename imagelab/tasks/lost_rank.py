"""A DDP process that dies (``kill -9``, out of memory) ends the whole job with one line naming it.

Two watches notice the death and call :func:`report_lost`:

* ``trainer=ddp``/``ddp_sim``: Lightning's launcher starts ranks 1..N-1 as child processes and watches them
  from a thread of rank 0 (``_ChildProcessObserver``); :func:`install_lost_rank_watch` replaces that
  observer's action (which SIGKILLed everything at once, racing rank 0's own error path, so the job ended
  with exit 137 or a gloo traceback and often no final record);
* ranks started by SLURM (``srun``, each on its node): ``imagelab.tasks.rank_lifeline`` (a connection from
  every rank to rank 0 that closes when the process dies).

Then:

* rank 0 writes ``metrics.json`` failed with the lost rank at once (SLURM may SIGKILL it soon after);
* rank 0's error path, which sees a collective fail (or srun's SIGTERM), asks :func:`lost_rank_error` and
  reports ``error: DDP rank 1 (pid N) died (SIGKILL) ...`` as its one line, ``metrics.json`` failed, exit 4;
* when rank 0 does not end by itself within ``lost_rank_timeout_s`` (a collective that waits instead of
  failing), the watch prints the line and ends the job.

Lightning is imported inside the function that patches it (the task wrapper imports this module before the
config is checked).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

EXIT_LOST_RANK = 4  # a DDP process of the job died
DEFAULT_TIMEOUT_S = 120.0
POLL_S = 1.0  # how often rank 0 checks its child processes
_PEER_LOSS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator")


class RankLost(Exception):
    """A DDP process of this job died; the message names it (one line)."""


_lost: list[str] = []
_timeout_s = DEFAULT_TIMEOUT_S
_record_hook: Callable[[str], None] | None = None
_timer: threading.Timer | None = None


def configure(timeout_s: float | None, record: Callable[[str], None] | None) -> None:
    """Set the time rank 0 gets to end the job after a rank died, and what records the job as failed with a
    message (called at the start of every job: the previous job's lost ranks and pending stop are forgotten)."""
    global _timeout_s, _record_hook, _timer
    if _timer is not None:
        _timer.cancel()  # the previous job of a sweep ended by itself
        _timer = None
    _lost.clear()
    _timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    _record_hook = record


def lost_ranks() -> list[str]:
    """Descriptions of the DDP ranks that died in this job so far (e.g. ``DDP rank 1 (pid 42) died (SIGKILL)``)."""
    return list(_lost)


def _describe(rank: int, pid: int, returncode: int) -> str:
    how = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    if returncode < 0 and -returncode in signal.Signals._value2member_map_:
        how = signal.Signals(-returncode).name
    return f"DDP rank {rank} (pid {pid}) died ({how})"


def lost_rank_message() -> str:
    """The one line that reports the lost ranks (empty before any was lost)."""
    if not _lost:
        return ""
    return f"{'; '.join(_lost)}: the job stopped; its last.ckpt (if any) is where a resume= continues"


def lost_rank_error(exc: BaseException, wait_s: float = 2 * POLL_S + 1) -> RankLost | None:
    """RankLost when a rank of this job died (waiting up to ``wait_s`` for the watch to notice when ``exc``
    looks like a collective that lost its peer), else None."""
    text = ""
    current: BaseException | None = exc
    for _ in range(20):
        if current is None:
            break
        text += f" {current}"
        current = current.__cause__ or current.__context__
    if not _lost and any(marker in text for marker in _PEER_LOSS):
        deadline = time.monotonic() + wait_s
        while not _lost and time.monotonic() < deadline:
            time.sleep(0.1)
    return RankLost(lost_rank_message()) if _lost else None


def _record(message: str) -> None:
    if _record_hook is not None:
        try:
            _record_hook(message)
        except Exception as exc:  # the record is best effort here; the error line still tells the user
            print(f"error: could not record the lost rank: {exc}", file=sys.stderr)


def report_lost(descriptions: list[str], children: list[Any] | None = None) -> None:
    """Ranks of this job died: remember them, record the job as failed now, and end the job (killing
    ``children``, rank 0's own rank processes) if rank 0 has not ended by itself within the timeout."""
    global _timer
    _lost.extend(descriptions)
    _record(lost_rank_message())
    if _timer is None:
        _timer = threading.Timer(_timeout_s, _force_stop, args=(list(children or []),))
        _timer.daemon = True  # a rank 0 that ended by itself does not wait for it
        _timer.start()


def _watch(observer: Any) -> bool:
    """One round of the observer: True when it is done (all children ended)."""
    for proc in observer._child_processes:
        proc.poll()
    codes = [proc.returncode for proc in observer._child_processes]
    if all(code == 0 for code in codes):
        return True
    dead = [(i + 1, p) for i, p in enumerate(observer._child_processes) if p.returncode]
    if not dead:
        return False
    report_lost([_describe(rank, p.pid, p.returncode) for rank, p in dead], observer._child_processes)
    return True


def _force_stop(children: list[Any]) -> None:
    """Rank 0 did not end within the timeout (a collective that waits): record, say it, end the job."""
    message = lost_rank_message()
    _record(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    for proc in children:
        if proc.poll() is None:
            proc.kill()
    os._exit(EXIT_LOST_RANK)


def install_lost_rank_watch() -> None:
    """Make Lightning's child-process observer (rank 0 of ``trainer=ddp``/``ddp_sim``) use this module."""
    # lazy: see the module docstring
    from lightning.fabric.strategies.launchers import subprocess_script

    observer = subprocess_script._ChildProcessObserver
    if getattr(observer, "_imagelab_watch", False):
        return
    original_init = observer.__init__

    def __init__(self: Any, main_pid: int, child_processes: list[Any], sleep_period: float = POLL_S) -> None:
        original_init(self, main_pid, child_processes, sleep_period=POLL_S)

    observer.__init__ = __init__
    observer._run = _watch
    observer._imagelab_watch = True
