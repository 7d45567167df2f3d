"""The amortised check points of the run guards: where they read device values and agree across processes.

A per-step host read of a device tensor stalls a GPU run (the CPU waits instead of queueing the next step),
and a per-step collective under DDP costs a round trip on top of the gradient all-reduce. So the guards
(``graceful_interrupt.GracefulInterrupt``, ``nonfinite_guard.NonFiniteLossGuard``) record each step cheaply
and read/agree only on the batches :func:`is_check_batch` picks: every ``every``-th training batch of an
epoch, the last one of an epoch (before validation and checkpoints) and the last step of a ``max_steps``
run. These batches are the same on every process (the same batch index, batch count and global step), so a
collective there never deadlocks and every rank acts at the same step.
"""

from __future__ import annotations

from typing import Any

DEFAULT_EVERY = 50  # training batches between two checks (train.yaml: guard_every_n_steps)


def check_interval(every: Any, name: str) -> int:
    """``every`` as a positive int; a ValueError naming ``name`` otherwise."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"{name} must be a positive integer, got {every!r}")
    return every


def is_check_batch(trainer: Any, batch_idx: int, every: int) -> bool:
    """Whether the guards read and agree after training batch ``batch_idx`` (see the module docstring)."""
    if (batch_idx + 1) % every == 0 or batch_idx + 1 >= trainer.num_training_batches:
        return True
    return 0 < trainer.max_steps <= trainer.global_step


def any_rank(trainer: Any, flag: bool) -> bool:
    """``flag`` of any rank under DDP (one collective: call it at a check point only), else ``flag``."""
    if trainer.world_size > 1:
        return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
    return flag


def position(trainer: Any) -> str:
    """``at epoch E, step S`` of the running trainer, for messages."""
    return f"at epoch {trainer.current_epoch}, step {trainer.global_step}"
