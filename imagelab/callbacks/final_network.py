"""Let a callback see a LightningModule's final network: the ones that size it from the data build it first."""

from __future__ import annotations

from typing import Any


def build_module_from_data(pl_module: Any, stage: str) -> None:
    """Let a module that builds its network from the data in ``setup`` do so now (idempotent).

    Lightning sets up the datamodule, then the callbacks, then the LightningModule: a callback that changes or
    checks the network in its own ``setup`` (channels-last, compile, distillation) calls this first, so that
    it sees the final network (``ClassifierModule.build_from_data`` sizes the head from the data's classes).
    Modules without ``build_from_data`` are complete at construction.
    """
    build = getattr(pl_module, "build_from_data", None)
    if callable(build):
        build(stage)
