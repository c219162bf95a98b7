"""Information-driven bars (López de Prado): a bar closes once its trades reach a threshold of
trades (``ticks:N``), base units (``volume:V``) or quote units (``dollar:D``), not a clock.

They are defined so that a backfill and a stream agree to the bit, whatever the connection
history (tardis-machine restarts its bars on every reconnect; these do not):
- trades of one (exchange, symbol) are ordered totally by (event time, trade id), ids that look
  like numbers ordering as numbers (shorter first), as time bars order their open and close;
- the count restarts at each UTC day, so a backfill starting on any day agrees with the stream;
- the trade that reaches the threshold belongs to its bar whole (no carry-over); the day's
  last bar closes at midnight short of it (``threshold_reached`` false);
- a volume or dollar bar reaches its threshold when the correctly rounded sum of its trades'
  amounts (or price x amount, each rounded once) is at least the threshold: a sum that does not
  depend on the order it is added in, so any grouping of the work gives the same cut;
- a bar is named by (day, ordinal); it opens and closes at its first and last trade's times.

Beam-free: the command line parses ``--bars`` with it, and the computation's transform
(``transforms.information_bar_computation``) cuts each day with ``day_bars``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

KINDS = ("ticks", "volume", "dollar")
DAY_MICROS = 86_400_000_000
_SIZE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


class BarsOptionError(ValueError):
    """A ``--bars`` value that names no known kind or gives no usable threshold."""


@dataclass(frozen=True)
class Threshold:
    kind: str
    size: float

    @property
    def text(self) -> str:
        """As the ``interval`` field of its bars names it, e.g. ``ticks:1000`` or ``dollar:1000000``."""
        size = int(self.size) if float(self.size).is_integer() else self.size
        return f"{self.kind}:{size}"

    @property
    def table(self) -> str:
        """The output table of these bars, beside the time bars' ``bars``."""
        return f"bars_{self.kind}"

    def measures(self, prices: np.ndarray, amounts: np.ndarray) -> np.ndarray | None:
        """What each trade adds to its bar; None for ticks, which count trades."""
        if self.kind == "volume":
            return amounts
        if self.kind == "dollar":
            return prices * amounts
        return None


def parse_threshold(kind: str, size_text: str) -> Threshold:
    if kind not in KINDS:
        raise BarsOptionError(f"unknown bar kind {kind!r}: use time, {', '.join(KINDS)}")
    if not _SIZE.match(size_text.strip()):
        raise BarsOptionError(f"bad {kind} bar size {size_text!r}: use a positive number, e.g. {kind}:1000")
    size = float(size_text)
    if not 0 < size < math.inf or (kind == "ticks" and not size.is_integer()):
        raise BarsOptionError(f"bad {kind} bar size {size_text!r}: it must be a positive "
                              f"{'whole number' if kind == 'ticks' else 'finite number'}")
    return Threshold(kind, size)


def trade_order(times: np.ndarray, trade_ids: list[str]) -> np.ndarray:
    """Row order by (event time, id length, id): the one total order of a symbol's trades."""
    ids = np.array(trade_ids, dtype=object)
    lengths = np.fromiter((len(i) for i in trade_ids), dtype=np.int64, count=len(trade_ids))
    return np.lexsort((ids.astype(str) if len(ids) else ids, lengths, times))


def bar_segments(threshold: Threshold, measures: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, reached) of the bars of ``n`` ordered trades of one day."""
    if threshold.kind == "ticks":
        size = int(threshold.size)
        starts = np.arange(0, n, size, dtype=np.int64)
        ends = np.minimum(starts + size, n)
        return starts, ends, ends - starts == size
    starts, ends = [], []
    running = np.cumsum(measures)  # an estimate of where each bar ends; fsum decides
    start = 0
    while start < n:
        before = running[start - 1] if start else 0.0
        end = int(np.searchsorted(running, before + threshold.size, side="left")) + 1
        end = _exact_end(measures, start, min(max(end, start + 1), n), threshold.size)
        starts.append(start)
        ends.append(end)
        start = end
    starts, ends = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
    reached = np.array([math.fsum(measures[s:e].tolist()) >= threshold.size for s, e in zip(starts.tolist(), ends.tolist())],
                       dtype=bool)
    return starts, ends, reached


def _exact_end(measures: np.ndarray, start: int, guess: int, size: float) -> int:
    """The smallest end (exclusive) whose bar [start, end) sums (correctly rounded) to ``size``
    or more, or ``len(measures)`` if none does; ``guess`` is usually it or next to it."""
    def reaches(end: int) -> bool:
        return math.fsum(measures[start:end].tolist()) >= size
    end = guess
    while end > start + 1 and reaches(end - 1):
        end -= 1
    while end < len(measures) and not reaches(end):
        end += 1
    return end


def utc_day(micros: int) -> str:
    from transforms.event_time import micros_to_datetime
    return micros_to_datetime(micros // DAY_MICROS * DAY_MICROS).date().isoformat()


def day_bars(exchange: str, symbol: str, threshold: Threshold, times: np.ndarray, prices: np.ndarray,
             amounts: np.ndarray, sides: np.ndarray, trade_ids: list[str]) -> list[dict]:
    """The bars of one UTC day of one (exchange, symbol)'s unique trades, in any arrival order:
    their value fields (as time bars compute them) and their name. Pane fields are the caller's."""
    from transforms.partial_bar import partial_bars_of_segments

    if not len(times):
        return []
    order = trade_order(times, trade_ids)
    times, prices, amounts, sides = times[order], prices[order], amounts[order], sides[order]
    ids = [trade_ids[i] for i in order.tolist()]
    starts, ends, reached = bar_segments(threshold, threshold.measures(prices, amounts), len(times))
    day = utc_day(int(times[0]))
    partials = partial_bars_of_segments(times, prices, amounts, sides, ids.__getitem__, starts, ends)
    return [{"exchange": exchange, "symbol": symbol, "interval": threshold.text,
             "window_start": partial.first[0], "window_end": partial.last[0], **partial.ohlcv(),
             "is_filled": False, "day": day, "ordinal": ordinal, "threshold_reached": bool(full)}
            for ordinal, (partial, full) in enumerate(zip(partials, reached.tolist()))]
