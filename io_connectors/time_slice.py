"""A time slice: the part of an input a backfill chunk reads, by event time.

A large file is split into slices cut at window boundaries, so every window's trades, and
every copy of a trade, fall in exactly one slice; each slice is then a chunk of its own, with
bounded memory. Rows with no usable event time belong to the first slice, which dead-letters
them once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimeSlice:
    start_us: int | None = None  # inclusive; None: from the beginning, with the rows that have no time
    end_us: int | None = None  # exclusive; None: to the end

    def holds(self, micros: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """Which rows belong to this slice."""
        inside = usable.copy()
        if self.start_us is not None:
            inside &= micros >= self.start_us
        if self.end_us is not None:
            inside &= micros < self.end_us
        if self.start_us is None:
            inside |= ~usable
        return inside

    def may_hold(self, time_range) -> bool:
        """Whether rows with event times in ``(min, max, none_missing)`` may belong here; True when unknown."""
        if time_range is None:
            return True
        low, high, none_missing = time_range
        if self.start_us is None and not none_missing:
            return True
        return (self.start_us is None or high >= self.start_us) and (self.end_us is None or low < self.end_us)


WHOLE_FILE = TimeSlice()
