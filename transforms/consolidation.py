"""Consolidated reference bars: one price per canonical pair and window from every venue's trades.

The method follows the partitioned, volume-weighted median of the CME CF Bitcoin Reference Rate:
- the window is split into P equal partitions;
- in each partition the trades of the included venues are pooled, and their volume-weighted
  median price taken: trades ordered by price, the median is the price of the first trade at
  which the cumulative volume reaches half the partition's volume (at exactly half, the lower
  price). Volumes are compared exactly (``ExactSum``), so the answer never depends on the order
  trades arrived in;
- the reference price is the mean of the medians of the partitions that had trades.

Venues are judged window by window, in event-time order, within each UTC day:
- **deviation:** a venue whose window VWAP is more than θ from the median of the other venues'
  VWAPs is excluded, and included again only once it is back within θ/2. With an even number of
  others, the nearer of the two middle VWAPs is the median, so one outlier never drags a good
  venue out with it;
- **stale:** a venue whose last trade is more than S before the window's end is excluded;
- **disconnected:** a venue its collector reported disconnected at the window's end is excluded;
- a window with fewer than ``min_constituents`` included venues has no price
  (``insufficient_constituents``); it is never filled from older data.

The judgement state (who is excluded for deviation, each venue's last trade and trade id) starts
afresh at each UTC midnight, so a day's bars depend on that day's trades alone: a backfill of one
day equals the same day inside a longer run, and a stream equals the backfill.

Beam-free; what a run asks for is ``transforms.consolidation_spec.ConsolidationSpec``, and the Beam
steps are in ``transforms.consolidated_bar_panes``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from transforms.consolidation_spec import ConsolidationSpec
from transforms.exact_sum import ExactSum

DEVIATION, STALE, DISCONNECTED = "deviation", "stale", "disconnected"
INSUFFICIENT_CONSTITUENTS = "insufficient_constituents"
CONSOLIDATED_EXCHANGE = "consolidated"
"""The ``exchange`` consolidated bars are stored under; their ``symbol`` is the pair, e.g. BTC/USD."""
_MAX_RANGES_SHOWN = 20


_NO_RUNS = np.zeros((0, 2), dtype=np.int64)


@dataclass
class VenueWindow:
    """One venue's unique trades of one window: mergeable, whatever the grouping or order."""

    trade_count: int = 0
    duplicate_count: int = 0
    volume: ExactSum = ExactSum()
    quote_volume: ExactSum = ExactSum()
    last_trade_us: int | None = None
    partition: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int16))
    price: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    amount: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    id_runs: np.ndarray | None = None
    """Its integer trade ids as runs of consecutive ids, rows (first, last), for a venue whose ids
    are consecutive; None otherwise (or when an id is not an integer)."""

    def merge(self, other: "VenueWindow") -> "VenueWindow":
        if not (other.trade_count or other.duplicate_count):
            return self
        if not (self.trade_count or self.duplicate_count):
            return other
        runs = None
        if self.id_runs is not None and other.id_runs is not None:
            runs = np.concatenate((self.id_runs, other.id_runs))
        elif self.trade_count == 0 or other.trade_count == 0:
            runs = self.id_runs if other.trade_count == 0 else other.id_runs
        last = [t for t in (self.last_trade_us, other.last_trade_us) if t is not None]
        return VenueWindow(
            self.trade_count + other.trade_count,
            self.duplicate_count + other.duplicate_count,
            self.volume + other.volume,
            self.quote_volume + other.quote_volume,
            max(last) if last else None,
            np.concatenate((self.partition, other.partition)),
            np.concatenate((self.price, other.price)),
            np.concatenate((self.amount, other.amount)),
            runs,
        )

    def without_trades(self) -> "VenueWindow":
        """Its figures only: what judging the venue needs, once the prices are computed."""
        return VenueWindow(
            self.trade_count,
            self.duplicate_count,
            self.volume,
            self.quote_volume,
            self.last_trade_us,
            id_runs=None if self.id_runs is None else normalized_runs(self.id_runs),
        )

    @property
    def vwap(self) -> float | None:
        volume = float(self.volume)
        return float(self.quote_volume) / volume if volume > 0 else None


def venue_window(
    event_time,
    price,
    amount,
    integer_ids: np.ndarray | None,
    duplicate_count: int,
    window_start_us: int,
    spec: ConsolidationSpec,
    sums: tuple | None = None,
) -> VenueWindow:
    """The summary of one venue's unique trades (numpy columns) of the window starting at
    ``window_start_us``; ``integer_ids`` only for a venue with consecutive ids; ``sums``, the
    exact (volume, quote volume) when already known."""
    if not len(event_time):
        return VenueWindow(duplicate_count=duplicate_count)
    width = spec.interval.micros // spec.partitions
    partition = ((np.asarray(event_time) - window_start_us) // width).astype(np.int16)
    volume, quote_volume = sums if sums is not None else ExactSum.of_many([amount, price * amount])
    runs = None if integer_ids is None else id_runs_of(integer_ids)
    return VenueWindow(
        len(event_time),
        duplicate_count,
        volume,
        quote_volume,
        int(np.max(event_time)),
        partition,
        np.asarray(price, dtype=np.float64),
        np.asarray(amount, dtype=np.float64),
        runs,
    )


def id_runs_of(ids: np.ndarray) -> np.ndarray:
    """Integer ids as runs of consecutive ids, rows (first, last)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > 1 and not (np.diff(ids) == 1).all():
        ids = np.unique(ids)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(ids)] - 1
    return np.stack((ids[starts], ids[ends]), axis=1) if len(ids) else _NO_RUNS


def normalized_runs(runs: np.ndarray) -> np.ndarray:
    """Runs sorted and merged where they overlap or touch."""
    if len(runs) < 2:
        return runs
    runs = runs[np.lexsort((runs[:, 1], runs[:, 0]))]
    reach = np.maximum.accumulate(runs[:, 1])
    new = np.r_[True, runs[1:, 0] > reach[:-1] + 1]
    ends = np.maximum.reduceat(runs[:, 1], np.flatnonzero(new))
    return np.stack((runs[new, 0], ends), axis=1)


def weighted_median(prices: np.ndarray, amounts: np.ndarray) -> float:
    """The lower volume-weighted median: ordered by price, the price at which the cumulative
    volume first reaches half the total, compared exactly (one partition of one set's trades)."""
    trades = VenueWindow(
        len(prices),
        partition=np.zeros(len(prices), dtype=np.int16),
        price=np.asarray(prices),
        amount=np.asarray(amounts),
    )
    return _set_prices([trades], np.array([1]))[0][0]


def _exact_median_index(amounts: np.ndarray, near: int) -> int:
    total = ExactSum.of(amounts)

    def reaches_half(i: int) -> bool:
        through = ExactSum.of(amounts[: i + 1])
        twice = through + through
        return (twice - total).numerator >= 0

    index = near
    while index > 0 and reaches_half(index - 1):
        index -= 1
    while not reaches_half(index):
        index += 1
    return index


def reference_price(venues: list[VenueWindow]) -> tuple[float | None, int]:
    """(mean of the partitions' weighted medians, partitions with trades) over the pooled trades of ``venues``."""
    traded = [v for v in venues if v.trade_count]
    if not traded:
        return None, 0
    return _set_prices(traded, np.array([(1 << len(traded)) - 1]))[0]


MAX_SUBSET_VENUES = 6
"""Up to this many venues with trades in a window, the price of every set of them is computed
when the window is pooled, so judging needs no trades; above it the trades are kept."""


def subset_prices(venues: dict[str, VenueWindow]) -> dict[frozenset, tuple[float | None, int]]:
    """(price, partitions with trades) for every non-empty set of the venues that traded, as
    ``reference_price`` gives it for those venues alone."""
    names = sorted(name for name, venue in venues.items() if venue.trade_count)
    if not names:
        return {}
    masks = np.arange(1, 1 << len(names), dtype=np.int64)
    found = _set_prices([venues[name] for name in names], masks)
    return {
        frozenset(name for i, name in enumerate(names) if mask >> i & 1): price
        for mask, price in zip(masks.tolist(), found)
    }


def _set_prices(chosen: list[VenueWindow], masks: np.ndarray) -> list[tuple[float | None, int]]:
    """(price, partitions with trades) of each set of ``chosen`` (bit i of a mask: venue i).

    The pooled trades are ordered once, by (partition, price); each set's volumes (zero outside
    it) are summed along that order in one pass, and each partition's median is where the running
    sum first reaches the sum before the partition plus half the partition's own, found by a
    search. A float comparison decides only where its rounding error cannot; near the half the
    partition is settled with exact sums."""
    code = np.concatenate([np.full(len(v.price), i, dtype=np.int64) for i, v in enumerate(chosen)])
    partition = np.concatenate([v.partition for v in chosen])
    price = np.concatenate([v.price for v in chosen])
    amount = np.concatenate([v.amount for v in chosen])
    order = np.lexsort((price, partition))
    code, partition, price, amount = code[order], partition[order], price[order], amount[order]
    amount = np.where(amount > 0, amount, 0.0)
    bounds = np.flatnonzero(np.diff(partition)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(partition)]
    volumes = np.where(((masks[:, None] >> code[None, :]) & 1).astype(bool), amount[None, :], 0.0)
    running = np.cumsum(volumes, axis=1)
    before = np.concatenate(
        (np.zeros((len(masks), 1)), running[:, starts[1:] - 1]), axis=1
    )  # sum before each partition
    totals = running[:, ends - 1] - before  # each set's volume in each partition
    tolerance = 8 * len(amount) * np.finfo(np.float64).eps * running[:, -1]
    traded = np.add.reduceat(volumes > 0, starts, axis=1)  # the set's trades in each partition, counted exactly
    prices = []
    for row in range(len(masks)):
        parts = np.flatnonzero(traded[row])
        at = _partition_medians(
            running[row],
            volumes[row],
            starts[parts],
            ends[parts],
            before[row, parts],
            totals[row, parts],
            tolerance[row],
        )
        prices.append((math.fsum(price[at].tolist()) / len(at), len(at)) if len(at) else (None, 0))
    return prices


def _partition_medians(running, volumes, starts, ends, before, totals, tolerance: float) -> np.ndarray:
    """The rows of the partitions' lower weighted medians, from one set's running volume over the
    window: each where the running volume first reaches the sum before it plus half its own."""
    candidates = np.clip(np.searchsorted(running, before + totals / 2), starts, ends - 1)
    previous = running[np.maximum(candidates - 1, 0)]
    clear = (
        (totals > tolerance)
        & (2 * (running[candidates] - before) - totals > tolerance)
        & ((candidates == starts) | (totals - 2 * (previous - before) > tolerance))
    )
    for k in np.flatnonzero(~clear).tolist():  # near the half, or a volume lost in the window's rounding
        candidates[k] = starts[k] + _exact_median_index(volumes[starts[k] : ends[k]], int(candidates[k] - starts[k]))
    return candidates


@dataclass
class PooledWindow:
    """One pair's window, ready to judge: each venue's figures, and the price of every set of
    venues that may be included (or, past ``MAX_SUBSET_VENUES``, the trades to compute it)."""

    venues: dict
    prices: dict
    trades: dict | None = None

    def price_of(self, included: list[str]) -> tuple[float | None, int]:
        if self.trades is not None:
            return reference_price([self.trades[name] for name in included])
        return self.prices.get(frozenset(included), (None, 0))


def pooled_window(venues: dict[str, VenueWindow]) -> PooledWindow:
    figures = {name: venue.without_trades() for name, venue in venues.items()}
    if sum(1 for venue in venues.values() if venue.trade_count) > MAX_SUBSET_VENUES:
        return PooledWindow(figures, {}, venues)
    return PooledWindow(figures, subset_prices(venues))


def median_of_others(vwaps: dict[str, float], venue: str) -> float | None:
    """The median of the other venues' VWAPs; with an even number of them, the middle one nearer
    ``venue``'s own VWAP."""
    others = sorted(v for name, v in vwaps.items() if name != venue)
    if not others:
        return None
    middle = len(others) // 2
    if len(others) % 2:
        return others[middle]
    own = vwaps[venue]
    low, high = others[middle - 1], others[middle]
    return low if abs(own - low) <= abs(high - own) else high


@dataclass(frozen=True)
class Judgement:
    """What a pair's venues carry from one window to the next within a day."""

    deviating: frozenset = frozenset()
    last_trade_us: tuple = ()
    """(venue, time) pairs, sorted: every venue seen today and its last trade."""
    last_trade_id: tuple = ()
    """(venue, id) pairs for venues with consecutive ids."""


def missing_id_ranges(runs: np.ndarray, previous_id: int | None) -> list[tuple[int, int]]:
    """Ranges of ids skipped in a window (its ids as runs): between its runs, and since ``previous_id``."""
    runs = normalized_runs(runs)
    if previous_id is not None:
        runs = runs[runs[:, 1] > previous_id]
        runs = np.concatenate(
            (
                np.array([[previous_id, previous_id]], dtype=np.int64),
                np.stack((np.maximum(runs[:, 0], previous_id + 1), runs[:, 1]), axis=1),
            )
        )
    gaps = np.flatnonzero(runs[1:, 0] > runs[:-1, 1] + 1)
    return [(int(runs[g, 1]) + 1, int(runs[g + 1, 0]) - 1) for g in gaps.tolist()]


def _ranges_text(ranges: list[tuple[int, int]]) -> str | None:
    if not ranges:
        return None
    shown = ",".join(f"{a}-{b}" for a, b in ranges[:_MAX_RANGES_SHOWN])
    return shown + (",..." if len(ranges) > _MAX_RANGES_SHOWN else "")


def consolidate_window(
    pair: tuple[str, str],
    window_start: int,
    pooled,
    before: Judgement,
    spec: ConsolidationSpec,
    disconnected: frozenset = frozenset(),
) -> tuple[dict, list[dict], Judgement]:
    """One window of one pair: (the consolidated bar's fields, one quality row per venue seen today,
    the judgement after it). ``pooled``: a ``PooledWindow``, or a dict of ``exchange:symbol`` to
    its trades in the window."""
    if not isinstance(pooled, PooledWindow):
        pooled = pooled_window(pooled)
    venues = pooled.venues
    base, quote = pair
    window_end = window_start + spec.interval.micros
    last_trade = dict(before.last_trade_us)
    for name, venue in venues.items():
        if venue.last_trade_us is not None:
            last_trade[name] = max(venue.last_trade_us, last_trade.get(name, venue.last_trade_us))
    stale_after_us = spec.stale_after_seconds * 1_000_000
    reasons = {}
    for name in last_trade:
        if name in disconnected:
            reasons[name] = DISCONNECTED
        elif window_end - last_trade[name] > stale_after_us:
            reasons[name] = STALE
    vwaps = {name: v.vwap for name, v in venues.items() if name not in reasons and v.vwap is not None}
    deviating, peer_deviation = set(before.deviating), {}
    for name, vwap in vwaps.items():
        peers = median_of_others(vwaps, name)
        if peers is None or peers <= 0:
            continue
        peer_deviation[name] = abs(vwap / peers - 1)
        if name in deviating and peer_deviation[name] <= spec.deviation / 2:
            deviating.discard(name)
        elif name not in deviating and peer_deviation[name] > spec.deviation:
            deviating.add(name)
    for name in vwaps:
        if name in deviating:
            reasons[name] = DEVIATION
    included = sorted(name for name in vwaps if name not in reasons)
    chosen = [venues[name] for name in included]
    price, with_trades = pooled.price_of(included)
    no_price = len(included) < spec.min_constituents or price is None
    volume = sum((v.volume for v in chosen), ExactSum())
    quote_volume = sum((v.quote_volume for v in chosen), ExactSum())
    included_volume = float(volume)
    shares = {name: float(venues[name].volume) / included_volume for name in included} if included_volume > 0 else {}
    bar = {
        "exchange": CONSOLIDATED_EXCHANGE,
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "interval": spec.interval.text,
        "window_start": window_start,
        "window_end": window_end,
        "price": None if no_price else price,
        "no_price_reason": INSUFFICIENT_CONSTITUENTS if no_price else None,
        "partitions": spec.partitions,
        "partitions_with_trades": with_trades,
        "coverage": with_trades / spec.partitions,
        "volume": included_volume,
        "quote_volume": float(quote_volume),
        "vwap": float(quote_volume) / included_volume if included_volume > 0 else None,
        "included_trade_count": sum(v.trade_count for v in chosen),
        "trade_count": sum(v.trade_count for v in venues.values()),
        "constituents": ",".join(included),
        "constituent_count": len(included),
        "volume_shares": json.dumps(shares, sort_keys=True),
        "excluded": json.dumps(dict(sorted(reasons.items())), sort_keys=True),
        "duplicate_count": sum(v.duplicate_count for v in venues.values()),
    }
    last_ids = dict(before.last_trade_id)
    rows = []
    for name in sorted(last_trade.keys() | venues.keys()):
        venue = venues.get(name, VenueWindow())
        exchange, _, symbol = name.partition(":")
        ranges = []
        if exchange in spec.sequential_id_exchanges and venue.id_runs is not None and len(venue.id_runs):
            ranges = missing_id_ranges(venue.id_runs, last_ids.get(name))
            last_ids[name] = max(int(venue.id_runs[:, 1].max()), last_ids.get(name, -1))
        vwap = venue.vwap
        rows.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "interval": spec.interval.text,
                "window_start": window_start,
                "window_end": window_end,
                "trade_count": venue.trade_count,
                "volume": float(venue.volume),
                "vwap": vwap,
                "volume_share": shares.get(name),
                "deviation_bps": None if vwap is None or bar["price"] is None else (vwap / bar["price"] - 1) * 10_000,
                "peer_deviation_bps": peer_deviation[name] * 10_000 if name in peer_deviation else None,
                "seconds_since_last_trade": (window_end - last_trade[name]) / 1e6 if name in last_trade else None,
                "missing_trade_ids": sum(b - a + 1 for a, b in ranges),
                "missing_trade_id_ranges": _ranges_text(ranges),
                "excluded": name in reasons,
                "exclusion_reason": reasons.get(name),
                "duplicate_count": venue.duplicate_count,
            }
        )
    after = Judgement(frozenset(deviating), tuple(sorted(last_trade.items())), tuple(sorted(last_ids.items())))
    return bar, rows, after


def consolidate_day(
    pair: tuple[str, str],
    windows: dict[int, dict[str, VenueWindow]],
    spec: ConsolidationSpec,
    judgement: Judgement = Judgement(),
):
    """Every window of one pair's day, in order: yields (window start, bar, quality rows, judgement after)."""
    for window_start in sorted(windows):
        bar, rows, judgement = consolidate_window(pair, window_start, windows[window_start], judgement, spec)
        yield window_start, bar, rows, judgement
