"""File writes carried out on one background thread, in the order they were asked for, while the caller goes on."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class OrderedBackgroundWrites:
    """A queue of file operations (writes, links, removals) run one at a time on a single worker thread.

    Operations run in the order they were submitted, so a link or a removal always finds the writes asked for
    before it finished. A failed operation's error (e.g. ``OSError`` "no space left on device") is raised on the
    caller's thread at its next :meth:`submit`, :meth:`wait` or :meth:`close`, once. The worker is not a daemon:
    an interpreter that exits normally finishes the queued operations first.
    """

    def __init__(self, thread_name: str) -> None:
        """``thread_name`` names the worker thread (seen in ``py-spy`` and in tracebacks)."""
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []

    def submit(self, operation: Callable[..., Any], *args: Any) -> None:
        """Queue ``operation(*args)``; first raise the error of an earlier operation that failed, if any."""
        self._raise_first_failure(block=False)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        self._pending.append(self._executor.submit(operation, *args))

    def wait(self) -> None:
        """Block until every queued operation has finished; raise the first error among them."""
        self._raise_first_failure(block=True)

    def close(self) -> None:
        """Finish the queued operations and stop the worker thread (a later :meth:`submit` starts a new one)."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _raise_first_failure(self, block: bool) -> None:
        """Forget the finished operations; raise the first failed one's error (after all finished if ``block``)."""
        if block:
            for future in self._pending:
                future.exception()  # waits for it
        # one look at each operation: one that finishes meanwhile stays pending rather than falling between
        seen = [(future, future.done()) for future in self._pending]
        self._pending = [future for future, done in seen if not done]
        for future, done in seen:
            error = future.exception() if done else None
            if error is not None:
                raise error
