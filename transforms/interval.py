"""Bar intervals: '1s', '15m', '4h', '1d', '1w', parsed into whole seconds aligned like exchange klines."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")
# Exchange weekly klines start on Monday 00:00 UTC; the Unix epoch was a Thursday.
_WEEK_OFFSET_SECONDS = 4 * 86400


class IntervalError(ValueError):
    """An interval string that is not a positive whole number of s, m, h, d or w."""


@dataclass(frozen=True)
class Interval:
    text: str
    seconds: int

    @property
    def micros(self) -> int:
        return self.seconds * 1_000_000

    @property
    def offset_seconds(self) -> int:
        """Window alignment: epoch-aligned, except weeks, which start on Monday as klines do."""
        return _WEEK_OFFSET_SECONDS if self.seconds % (7 * 86400) == 0 else 0

    @property
    def offset_micros(self) -> int:
        return self.offset_seconds * 1_000_000

    def window_start_micros(self, event_time_us):
        """The start of the window holding each event time (works on ints and numpy arrays)."""
        return (event_time_us - self.offset_micros) // self.micros * self.micros + self.offset_micros


def parse_interval(text: str) -> Interval:
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise IntervalError(
            f"bad interval {text!r}: use a whole number followed by s, m, h, d or w (e.g. 1m, 15m, 4h, 1d); "
            "calendar months are not fixed-length windows"
        )
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        raise IntervalError(f"bad interval {text!r}: it must be positive")
    seconds = count * _UNIT_SECONDS[unit]
    if seconds > 366 * 86400:
        raise IntervalError(f"bad interval {text!r}: longer than a year")
    return Interval(text=f"{count}{unit}", seconds=seconds)
