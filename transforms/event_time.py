"""Event time: microseconds since the epoch, exact conversions to and from datetimes, and which
window each trade falls in. Beam-free: parsers and the command line's planning use it too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from transforms.interval import Interval

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


def ms_ceiling(micros: int) -> int:
    """Rounded up to the millisecond: portable runners keep timers in milliseconds, and a timer
    that fired before its target would not see the watermark past it."""
    return -(-micros // 1000) * 1000
