"""The objects that exist before fitting are kept out of the garbage collector while fitting, and only then."""

from __future__ import annotations

import gc

import pytest

from imagelab.tasks.training import _heap_frozen_while_fitting


class Cycle:
    """An object in a reference cycle: only the garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_objects_before_fitting_are_frozen_during_the_fit_only() -> None:
    assert gc.get_freeze_count() == 0
    before = Cycle()
    with _heap_frozen_while_fitting():
        assert gc.get_freeze_count() > 0
        assert not gc.is_tracked(before) or before not in gc.get_objects(generation=2)
        during = Cycle()
        del during
        assert gc.collect() > 0  # what the fit makes is collected as usual
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), _heap_frozen_while_fitting():
        raise RuntimeError("a failed fit")
    assert gc.get_freeze_count() == 0  # unfrozen after a failure too
    gc.freeze()  # a caller that froze the heap itself keeps it frozen
    try:
        with _heap_frozen_while_fitting():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
