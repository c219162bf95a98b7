"""A chunk run in-process tunes the garbage collector only while it runs."""

from __future__ import annotations

import gc

from runners.gc_tuning import THRESHOLDS, collecting_rarely


def test_the_callers_collector_comes_back():
    before = gc.get_threshold()
    gc.unfreeze()
    with collecting_rarely():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0  # the caller's objects are out of every pass meanwhile
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_it_comes_back_after_a_failure_too():
    before = gc.get_threshold()
    try:
        with collecting_rarely():
            raise RuntimeError("a chunk failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
