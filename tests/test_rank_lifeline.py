"""The lifeline of SLURM-started DDP ranks: a connection that ends without a goodbye reports its rank lost
(the whole path on a real cluster: tests/test_cluster_slurm_lost_rank.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from imagelab.tasks import lost_rank
from imagelab.tasks.rank_lifeline import GOODBYE, _follow


@pytest.fixture
def recorded() -> Iterator[list[str]]:
    """What the lost-rank watch records as the job's failure (a long timeout: no forced stop here)."""
    messages: list[str] = []
    lost_rank.configure(600, messages.append)
    yield messages
    lost_rank.configure(None, None)  # forget the lost rank and cancel the pending stop


def _rank_connection(*sent: bytes) -> socket.socket:
    """Rank 0's end of a connection on which a rank sent ``sent`` and then closed its end."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(b"".join(sent))
    return ours


def test_a_connection_that_closes_without_goodbye_reports_its_rank(recorded: list[str]) -> None:
    _follow(_rank_connection(b"1 4242 n2\n"))
    [lost] = lost_rank.lost_ranks()
    assert lost == "DDP rank 1 (pid 4242 on n2) died: its connection to rank 0 closed"
    assert recorded == [lost_rank.lost_rank_message()] and recorded[0].startswith(lost)  # recorded at once


def test_a_rank_that_says_goodbye_is_not_lost(recorded: list[str]) -> None:
    _follow(_rank_connection(b"1 4242 n2\n", GOODBYE))
    assert lost_rank.lost_ranks() == [] and recorded == []
