"""Stamp event time: cut each trade batch into one chunk per (exchange, symbol, window).

Each chunk gets a Beam timestamp inside its window (its earliest trade), so Beam's own windowing,
watermarks, triggers and lateness then act on chunks exactly as they would on single trades.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.utils.timestamp import Timestamp

from transforms.interval import Interval
from transforms.keys import ByWindow
from transforms.trade_chunk import chunks_of


class _StampChunks(beam.DoFn):
    def __init__(self, interval: Interval):
        self._interval = interval

    def process(self, batch: pa.Table):
        starts = self._interval.window_start_micros(batch.column("event_time").cast(pa.int64()).to_numpy())
        for chunk in chunks_of(batch, starts):
            key = (chunk.exchange, chunk.symbol, chunk.window_start)
            yield beam.window.TimestampedValue((key, chunk), Timestamp(micros=int(chunk.event_time.min())))


class StampEventTime(beam.PTransform):
    """Trade batches -> timestamped ((exchange, symbol, window_start_us), TradeChunk) pairs."""

    def __init__(self, interval: Interval, label=None):
        super().__init__(label)
        self._interval = interval

    def expand(self, trades):
        return trades | beam.ParDo(_StampChunks(self._interval)).with_output_types(ByWindow)
