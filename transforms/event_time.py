"""Stamp event time: cut each trade batch into one chunk per (exchange, symbol, window).

Each chunk gets a Beam timestamp inside its window (its earliest trade), so Beam's own windowing,
watermarks, triggers and lateness then act on chunks exactly as they would on single trades.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.timestamp import Timestamp

from transforms.interval import Interval
from transforms.keys import ByWindow
from transforms.trade_batch import event_time_micros, keys_of


def window_chunks(batch: pa.Table, interval: Interval):
    """Yield ((exchange, symbol, window_start_us), chunk, earliest_event_us) for a batch."""
    times = event_time_micros(batch)
    starts = interval.window_start_micros(times)
    codes, pairs = keys_of(batch)
    order = np.lexsort((starts, codes))
    sorted_codes, sorted_starts = codes[order], starts[order]
    boundaries = np.flatnonzero((np.diff(sorted_codes) != 0) | (np.diff(sorted_starts) != 0)) + 1
    for segment in np.split(order, boundaries):
        if not len(segment):
            continue
        first = segment[0]
        exchange, symbol = pairs[codes[first]].split("\x1f", 1)
        chunk = batch.take(pa.array(segment, pa.int64()))
        yield (exchange, symbol, int(starts[first])), chunk, int(times[segment].min())


class _StampChunks(beam.DoFn):
    def __init__(self, interval: Interval):
        self._interval = interval

    def process(self, batch: pa.Table):
        for key, chunk, earliest in window_chunks(batch, self._interval):
            yield beam.window.TimestampedValue((key, chunk), Timestamp(micros=earliest))


class StampEventTime(beam.PTransform):
    """Trade batches -> timestamped ((exchange, symbol, window_start_us), chunk) pairs."""

    def __init__(self, interval: Interval, label=None):
        super().__init__(label)
        self._interval = interval

    def expand(self, trades):
        return trades | beam.ParDo(_StampChunks(self._interval)).with_output_types(ByWindow)
