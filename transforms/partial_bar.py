"""A partial bar: the mergeable summary of some trades of one window.

Chunks become partial bars, and partials merge in any order and any grouping into the same
result. That is what lets a runner combine before shuffling, and what makes the backfill and
the stream agree to the last bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from transforms.exact_sum import ExactSum

if TYPE_CHECKING:
    from transforms.trade_chunk import TradeChunk

# A trade's place in time: event time first, then trade id (shorter first, so numeric ids
# order as numbers), never arrival order.
TradeRank = tuple  # (event_time_us, len(trade_id), trade_id, price)


@dataclass(frozen=True)
class PartialBar:
    trade_count: int = 0
    duplicate_count: int = 0
    volume: ExactSum = ExactSum()
    quote_volume: ExactSum = ExactSum()
    buy_volume: ExactSum = ExactSum()
    sell_volume: ExactSum = ExactSum()
    high: float = float("-inf")
    low: float = float("inf")
    first: TradeRank | None = None
    last: TradeRank | None = None

    def merge(self, other: "PartialBar") -> "PartialBar":
        # An empty partial (no trades, no duplicates) holds only the defaults: merging it changes nothing.
        if not (other.trade_count or other.duplicate_count):
            return self
        if not (self.trade_count or self.duplicate_count):
            return other
        return PartialBar(
            trade_count=self.trade_count + other.trade_count,
            duplicate_count=self.duplicate_count + other.duplicate_count,
            volume=self.volume + other.volume,
            quote_volume=self.quote_volume + other.quote_volume,
            buy_volume=self.buy_volume + other.buy_volume,
            sell_volume=self.sell_volume + other.sell_volume,
            high=max(self.high, other.high),
            low=min(self.low, other.low),
            first=_pick(min, self.first, other.first),
            last=_pick(max, self.last, other.last),
        )

    def __reduce__(self):
        # Flat fields pickle faster than nested dataclasses, and partials cross a shuffle at least
        # once per window.
        sums = (self.volume, self.quote_volume, self.buy_volume, self.sell_volume)
        return _partial_bar_from_pickle, (
            self.trade_count,
            self.duplicate_count,
            tuple(x for s in sums for x in (s.numerator, s.exponent)),
            self.high,
            self.low,
            self.first,
            self.last,
        )

    def ohlcv(self) -> dict:
        """The bar's value fields, rounded once from the exact sums."""
        volume, quote_volume = float(self.volume), float(self.quote_volume)
        return {
            "open": self.first[3],
            "high": self.high,
            "low": self.low,
            "close": self.last[3],
            "volume": volume,
            "quote_volume": quote_volume,
            "vwap": quote_volume / volume if volume > 0 else None,
            "trade_count": self.trade_count,
            "buy_volume": float(self.buy_volume),
            "sell_volume": float(self.sell_volume),
            "first_trade_id": self.first[2],
            "last_trade_id": self.last[2],
            "duplicate_count": self.duplicate_count,
        }


def _partial_bar_from_pickle(trade_count, duplicate_count, sums, high, low, first, last) -> PartialBar:
    volume, quote_volume, buy_volume, sell_volume = (ExactSum(sums[i], sums[i + 1]) for i in range(0, 8, 2))
    return PartialBar(
        trade_count, duplicate_count, volume, quote_volume, buy_volume, sell_volume, high, low, first, last
    )


def _pick(choose, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)


def partial_bar(chunk: TradeChunk, duplicate_count: int = 0) -> PartialBar:
    """Summarize one chunk of unique trades of a single (exchange, symbol, window)."""
    if not len(chunk):
        return PartialBar(duplicate_count=duplicate_count)
    [partial] = partial_bars_of_segments(
        chunk.event_time, chunk.price, chunk.amount, chunk.side, chunk.trade_id, np.array([0]), np.array([len(chunk)])
    )
    return dataclasses.replace(partial, duplicate_count=duplicate_count)


def partial_bars_of_segments(times, prices, amounts, sides, trade_id, segment_starts, segment_ends) -> list[PartialBar]:
    """Partial bars of many chunks at once.

    Rows are grouped by segment (``segment_starts``/``segment_ends``), in any order within one;
    ``trade_id(i)`` gives row i's id. Sums, highs, lows and the first and last event times are
    vectorized over all segments; only ties in event time at a segment's first or last trade
    are resolved one by one.
    """
    n_segments = len(segment_starts)
    segment_of_row = np.repeat(np.arange(n_segments), segment_ends - segment_starts)
    # Amounts are summed per (segment, side code): buy, sell and unknown-side volume, whose sum is
    # the volume (exact). Quote volume is the fourth sum.
    keys = np.concatenate((segment_of_row * 4 + sides, segment_of_row * 4 + 3))
    sums = ExactSum.of_groups(np.concatenate((amounts, prices * amounts)), keys, 4 * n_segments)
    volumes = [buy + sell + unknown for buy, sell, unknown in zip(sums[0::4], sums[1::4], sums[2::4])]
    highs = np.maximum.reduceat(prices, segment_starts)
    lows = np.minimum.reduceat(prices, segment_starts)
    earliest = np.minimum.reduceat(times, segment_starts)
    latest = np.maximum.reduceat(times, segment_starts)

    def edges(extreme):
        """Per segment, the row at its extreme time when only one row has it, else -1 (a tie)."""
        at_extreme = times == extreme[segment_of_row]
        rows = np.flatnonzero(at_extreme)
        single = np.add.reduceat(at_extreme.astype(np.int64), segment_starts) == 1
        first_row = rows[np.searchsorted(segment_of_row[rows], np.arange(n_segments))]
        return np.where(single, first_row, -1)

    def ranks(rows, choose, extreme) -> list[TradeRank]:
        """Each segment's edge trade's rank; a tie at the extreme time goes to the first (min)
        or last (max) trade id."""
        for k in np.flatnonzero(rows < 0).tolist():  # ties: rare, resolved one by one
            tied = (
                np.flatnonzero(times[segment_starts[k] : segment_ends[k]] == extreme[k]) + segment_starts[k]
            ).tolist()
            rows[k] = choose(tied, key=lambda i: (len(trade_id(i)), trade_id(i)))
        identifiers = [trade_id(row) for row in rows.tolist()]
        return [
            (time, len(identifier), identifier, price)
            for time, identifier, price in zip(times[rows].tolist(), identifiers, prices[rows].tolist())
        ]

    firsts, lasts = ranks(edges(earliest), min, earliest), ranks(edges(latest), max, latest)
    counts = (segment_ends - segment_starts).tolist()
    return [
        PartialBar(
            trade_count=counts[k],
            volume=volumes[k],
            quote_volume=sums[4 * k + 3],
            buy_volume=sums[4 * k],
            sell_volume=sums[4 * k + 1],
            high=high,
            low=low,
            first=first,
            last=last,
        )
        for k, (high, low, first, last) in enumerate(zip(highs.tolist(), lows.tolist(), firsts, lasts))
    ]
