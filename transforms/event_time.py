"""Event time: microseconds since the epoch, which window each trade falls in, and the Beam
timestamp of each window chunk.

A trade batch is cut into one chunk per (exchange, symbol, window). Each chunk gets a Beam
timestamp inside its window (its earliest trade), so Beam's own windowing, watermarks,
triggers and lateness then act on chunks exactly as they would on single trades.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.timestamp import Timestamp

from transforms.interval import Interval
from transforms.trade_chunk import chunks_of


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


def micros_to_datetime(micros: int) -> datetime:
    """Exact: no detour through float seconds."""
    return EPOCH + timedelta(microseconds=int(micros))


def micros_to_iso(micros: int) -> str | int:
    """ISO 8601, for a dead letter's payload; a time past datetime's range (the year 9999) stays
    the integer it is, so that it still reaches its dead letter."""
    try:
        return micros_to_datetime(micros).isoformat()
    except OverflowError:
        return micros


def datetime_to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def event_times(batch: pa.Table) -> np.ndarray:
    return batch.column("event_time").cast(pa.int64()).to_numpy()


def window_starts(batch: pa.Table, interval: Interval) -> np.ndarray:
    return interval.window_start_micros(event_times(batch))


def stamped_window_chunks(batch: pa.Table, starts: np.ndarray, pair: tuple[str, str]):
    """Yield timestamped ((exchange, symbol, window_start_us), TradeChunk) pairs of one pair's batch.

    A chunk's timestamp is its earliest trade's time, which its summary's first trade already holds.
    """
    for chunk in chunks_of(batch, starts, pair):
        key = (chunk.exchange, chunk.symbol, chunk.window_start)
        yield beam.window.TimestampedValue((key, chunk), Timestamp(micros=chunk.summary.first[0]))
