"""W&B set to online but its server out of reach (e.g. a compute node without internet): continue offline.

``wandb.init`` waits ``settings.init_timeout`` seconds (conf/logger/wandb.yaml) for the server and then
raises. :func:`start_online_or_offline` starts an online run on rank zero right away, so that this happens
before training, and on failure starts an offline run with the same run id instead: the training goes on,
one line gives the ``wandb sync`` command that uploads the run later under that id, and the logger carries
the reason (``offline_fallback``) for ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from imagelab.core.distributed import env_rank
from imagelab.core.errors import first_line
from imagelab.tracking.console import say

FALLBACK_ATTRIBUTE = "offline_fallback"
"""Attribute of a WandbLogger that fell back to offline: why (the server's error, one line)."""


RUN_ID_ALPHABET = string.ascii_lowercase + string.digits
RUN_ID_LENGTH = 8  # the form of the ids W&B generates itself


def new_run_id() -> str:
    """A fresh random W&B run id (8 lowercase letters and digits, as W&B makes them)."""
    return "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(RUN_ID_LENGTH))


def offline_fallback(logger: Any) -> str | None:
    """Why ``logger`` logs offline although online was asked for, or None."""
    return getattr(logger, FALLBACK_ATTRIBUTE, None)


def _forget_failed_start(node: DictConfig) -> None:
    """Leave W&B's service after an online start that failed (the service keeps the run id taken) and remove
    the attempt's empty ``run-*`` folder.

    A service this process started ends with ``wandb.teardown()``. One inherited from a parent process that uses
    W&B (``WANDB_SERVICE``, e.g. a launcher or a notebook) keeps running and keeps the id, so this process
    forgets it: the offline run starts a service of its own.
    """
    import wandb  # lazy: loaded already by the failed start

    with contextlib.suppress(Exception):
        wandb.teardown()
    os.environ.pop(wandb.env.SERVICE, None)
    for attempt in (Path(node.save_dir) / "wandb").glob(f"run-*-{node.id}"):
        shutil.rmtree(attempt, ignore_errors=True)


def start_online_or_offline(node: DictConfig, build: Callable[[DictConfig], Any]) -> Any:
    """Build the WandbLogger of ``node`` with ``build``; online on rank zero, start the run now and fall back
    to an offline run with the same id when the server does not answer within ``settings.init_timeout``."""
    if node.get("mode") != "online" or env_rank() != 0:
        return build(node)
    with open_dict(node):
        if not node.get("id"):
            node.id = new_run_id()  # fixed now, so that an offline fallback run is synced under it
    logger = build(node)
    try:
        logger.experiment  # noqa: B018 - wandb.init: contacts the server, waits at most init_timeout
        return logger
    except Exception as exc:  # CommError (unreachable, timed out), AuthenticationError, ...
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    _forget_failed_start(node)
    with open_dict(node):
        node.mode = "offline"
    logger = build(node)
    run_dir = Path(logger.experiment.dir).parent
    setattr(logger, FALLBACK_ATTRIBUTE, reason)
    wait = (node.get("settings") or {}).get("init_timeout")
    waited = f" within {wait} s" if wait is not None else ""
    say(
        f"W&B server not reachable{waited} ({reason}); logging offline as run {node.id}, upload it later "
        f"with: wandb sync {run_dir}",
        err=True,
    )
    return logger
