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

Beam-free: ``transforms.information_bar_panes`` cuts each day with ``day_bars`` as the watermark
releases it; ``transforms.bar_kinds`` names the thresholds.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.bar_kinds import DAY_MICROS, Threshold
from transforms.event_time import micros_to_datetime
from transforms.partial_bar import partial_bars_of_segments


def trade_order(times: np.ndarray, trade_ids: list[str]) -> np.ndarray:
    """Row order by (event time, id length, id): the one total order of a symbol's trades.
    Lengths count characters and ids compare by code point, as Python's ``len`` and ``<`` do."""
    ids = pa.array(trade_ids, type=pa.string())
    keys = pa.table({"time": times, "length": pc.utf8_length(ids), "id": ids})
    return pc.sort_indices(
        keys, sort_keys=[("time", "ascending"), ("length", "ascending"), ("id", "ascending")]
    ).to_numpy()


def bar_segments(
    threshold: Threshold, measures: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    reached = np.array(
        [math.fsum(measures[s:e].tolist()) >= threshold.size for s, e in zip(starts.tolist(), ends.tolist())],
        dtype=bool,
    )
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
    return micros_to_datetime(micros // DAY_MICROS * DAY_MICROS).date().isoformat()


def day_bars(
    exchange: str,
    symbol: str,
    threshold: Threshold,
    times: np.ndarray,
    prices: np.ndarray,
    amounts: np.ndarray,
    sides: np.ndarray,
    trade_ids: list[str],
    duplicates: dict[int, int] | None = None,
    interval=None,
    ordered: bool = False,
) -> list[dict]:
    """The bars of one UTC day of one (exchange, symbol)'s unique trades, in any arrival order:
    their value fields (as time bars compute them) and their name. Pane fields are the caller's.

    ``duplicates`` (window start -> re-delivered copies dropped there, windows of ``interval``)
    are carried by the bar holding each window's last trade, so a bar's ``duplicate_count``
    does not depend on when the copies came; a window none of these trades is in is skipped.
    ``ordered``: the trades come in ``trade_order`` already."""
    if not len(times):
        return []
    if ordered:
        ids = trade_ids
    else:
        order = trade_order(times, trade_ids)
        times, prices, amounts, sides = times[order], prices[order], amounts[order], sides[order]
        ids = [trade_ids[i] for i in order.tolist()]
    starts, ends, reached = bar_segments(threshold, threshold.measures(prices, amounts), len(times))
    day = utc_day(int(times[0]))
    partials = partial_bars_of_segments(times, prices, amounts, sides, ids.__getitem__, starts, ends)
    carried = _duplicates_per_bar(times, duplicates, interval, starts)
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "interval": threshold.text,
            "window_start": partial.first[0],
            "window_end": partial.last[0],
            **partial.ohlcv(),
            "duplicate_count": duplicate_count,
            "is_filled": False,
            "day": day,
            "ordinal": ordinal,
            "threshold_reached": bool(full),
        }
        for ordinal, (partial, full, duplicate_count) in enumerate(zip(partials, reached.tolist(), carried))
    ]


def _duplicates_per_bar(
    ordered_times: np.ndarray, duplicates: dict[int, int] | None, interval, starts: np.ndarray
) -> list[int]:
    """Per bar (its first row in ``starts``), the duplicates of the windows whose last trade it holds."""
    carried = np.zeros(len(ordered_times), dtype=np.int64)
    if duplicates:
        windows = interval.window_start_micros(ordered_times)
        keys = np.array(sorted(duplicates), dtype=np.int64)
        last = np.searchsorted(windows, keys, side="right") - 1
        present = (last >= 0) & (windows[np.maximum(last, 0)] == keys)
        np.add.at(carried, last[present], np.array([duplicates[k] for k in keys.tolist()], dtype=np.int64)[present])
    return np.add.reduceat(carried, starts).tolist() if len(starts) else []
