"""Rank 0 of a SLURM-started DDP job learns at once which rank died, so the job ends with one line naming it.

Under ``srun`` every rank is started by SLURM on its node; no process of the job watches the others (under
``trainer=ddp`` rank 0 watches its child processes, ``imagelab.tasks.lost_rank``). Rank 0 only sees a
collective fail ("Connection reset by peer"), without knowing whose connection it was, while srun sends
SIGTERM to everyone. :class:`RankLifeline` adds the missing watch:

* when fitting starts, rank 0 listens on a free TCP port and broadcasts it; every other rank connects to
  rank 0's host (``MASTER_ADDR``, the job's main address) and says who it is (rank, pid, node);
* the kernel closes a process's connections when it dies in any way (``kill -9``, out of memory), so rank 0
  reads the end of that connection at once, and reports the rank lost (``lost_rank.report_lost``), unless the
  rank said goodbye first (it does when its process exits normally: ``atexit``);
* keep-alive probes also notice a node that vanished without closing anything (about 20 s).

Rank 0's error path then reports the lost rank as the job's one ``error:`` line (exit 4, metrics.json
failed), or the watch ends a rank 0 stuck for ``lost_rank_timeout_s``.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading

import lightning.pytorch as pl

from imagelab.tasks.lost_rank import report_lost

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 60.0
GOODBYE = b"bye\n"
_KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 2}  # a silent peer: lost after ~20 s


def _keep_alive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE.items():
        if hasattr(socket, name):  # Linux; elsewhere the system's defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _follow(conn: socket.socket) -> None:
    """Rank 0: read one rank's introduction, then wait for its goodbye or the end of its connection."""
    with conn, conn.makefile("rb") as stream:
        try:
            rank, pid, node = stream.readline().decode().split()
            last = stream.readline()
        except (OSError, ValueError):
            return  # not one of this job's ranks, or it vanished while introducing itself
        if last != GOODBYE:
            report_lost([f"DDP rank {rank} (pid {pid} on {node}) died: its connection to rank 0 closed"])


def _serve(server: socket.socket, expected: int) -> None:
    """Rank 0: accept the other ranks' connections and follow each in its own thread."""
    with server:
        for _ in range(expected):
            try:
                conn, _address = server.accept()
            except OSError:
                return
            _keep_alive(conn)
            threading.Thread(target=_follow, args=(conn,), daemon=True, name="rank-lifeline").start()


def _say_goodbye(conn: socket.socket) -> None:
    try:
        conn.sendall(GOODBYE)
        conn.close()
    except OSError:
        pass  # rank 0 is gone already


class RankLifeline(pl.Callback):
    """Connect every rank of a SLURM-started DDP job to rank 0, which reports a rank whose process died.

    Only active when SLURM started the ranks (Lightning's ``SLURMEnvironment``) and there are at least two.
    """

    def __init__(self) -> None:
        self.started = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Open the connections once, when the process group exists (the first stage of the run)."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        environment = getattr(trainer.strategy, "cluster_environment", None)
        if self.started or trainer.world_size < 2 or not isinstance(environment, SLURMEnvironment):
            return
        self.started = True
        port = 0
        if trainer.is_global_zero:
            server = socket.create_server(("", 0))
            port = server.getsockname()[1]
            threading.Thread(
                target=_serve, args=(server, trainer.world_size - 1), daemon=True, name="rank-lifeline"
            ).start()
        port = int(trainer.strategy.broadcast(port, src=0))
        if trainer.is_global_zero:
            return
        try:
            conn = socket.create_connection((environment.main_address, port), timeout=CONNECT_TIMEOUT_S)
            conn.settimeout(None)
            _keep_alive(conn)
            conn.sendall(f"{trainer.global_rank} {os.getpid()} {_node_name()}\n".encode())
        except OSError as exc:
            log.warning("rank %d could not connect to rank 0's lifeline (%s)", trainer.global_rank, exc)
            return
        atexit.register(_say_goodbye, conn)
