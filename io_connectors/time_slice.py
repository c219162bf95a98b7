"""A time slice: the part of an input a backfill chunk reads, by event time.

A large file is split into slices cut at window boundaries, so every window's trades, and
every copy of a trade, fall in exactly one slice; each slice is then a chunk of its own, with
bounded memory. Rows with no usable event time belong to the first slice, which dead-letters
them once.

A Parquet row group's statistics let a slice skip the groups they place outside it, but a writer
can get them wrong: every row must still reach its slice. The planner reads every group's times,
so it checks the statistics too; a slice skips a group unread only when they were found right,
and otherwise reads the group's times to see whether any of its rows are in the slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from io_connectors.formats.normalized import event_time_micros


@dataclass(frozen=True)
class TimeSlice:
    start_us: int | None = None  # inclusive; None: from the beginning, with the rows that have no time
    end_us: int | None = None  # exclusive; None: to the end
    statistics_checked: bool = False  # every row group's statistics were found to hold its rows' times

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


def row_group_time_range(parquet, group: int):
    """(min, max, all rows have a time) of a Parquet row group's event times, as its statistics
    say; None if they do not say."""
    names = parquet.schema_arrow.names
    if "event_time" not in names:
        return None
    stats = parquet.metadata.row_group(group).column(names.index("event_time")).statistics
    if stats is None or not stats.has_min_max:
        return None
    bounds = pa.array([stats.min, stats.max], parquet.schema_arrow.field("event_time").type)
    micros, usable = event_time_micros(pa.table({"event_time": bounds}))
    if not usable.all():
        return None
    return int(micros[0]), int(micros[1]), bool(stats.has_null_count and stats.null_count == 0)


def statistics_hold(time_range, micros: np.ndarray, usable: np.ndarray) -> bool:
    """Whether a row group's rows, with these event times, are all where its statistics' time range places them."""
    if time_range is None:
        return True
    low, high, none_missing = time_range
    times = micros[usable]
    if none_missing and not usable.all():
        return False
    return not len(times) or (int(times.min()) >= low and int(times.max()) <= high)
