"""An independent reference for consolidated bars, written from the method's text and not from
the pipeline's code: plain Python, exact fractions, one trade at a time.

Trades are tuples (venue "exchange:symbol", base, quote, trade id, event time us, price, amount).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction

DAY = 86_400_000_000


def weighted_median(trades: list[tuple[float, float]]) -> float:
    """(price, amount) pairs: ordered by price, the price of the first trade at which the running
    volume reaches half the total, exactly."""
    ordered = sorted((p, Fraction(a)) for p, a in trades if a > 0)
    total = sum(a for _, a in ordered)
    running = Fraction(0)
    for price, amount in ordered:
        running += amount
        if 2 * running >= total:
            return price
    raise AssertionError("no trades")


def partitioned_price(trades: list[tuple[int, float, float]], window_start: int, width: int, partitions: int):
    """(time, price, amount) trades of one window: (mean of each non-empty partition's weighted
    median, partitions used)."""
    by_partition = defaultdict(list)
    for time, price, amount in trades:
        if amount > 0:
            by_partition[(time - window_start) * partitions // width].append((price, amount))
    if not by_partition:
        return None, 0
    medians = [weighted_median(by_partition[p]) for p in sorted(by_partition)]
    return math.fsum(medians) / len(medians), len(medians)


def _vwap(trades) -> float | None:
    volume = float(sum(Fraction(a) for _, _, a in trades))
    if volume <= 0:
        return None
    return float(sum(Fraction(p * a) for _, p, a in trades)) / volume


def _peer_median(own: float, others: list[float]) -> float | None:
    if not others:
        return None
    others = sorted(others)
    if len(others) % 2:
        return others[len(others) // 2]
    low, high = others[len(others) // 2 - 1], others[len(others) // 2]
    return low if abs(own - low) <= abs(high - own) else high


def reference_bars(
    trades: list[tuple],
    width: int,
    partitions: int = 12,
    deviation: float = 0.02,
    stale_after_us: int = 300_000_000,
    min_constituents: int = 1,
    quote_as: dict | None = None,
    statuses: list[tuple] = (),
) -> dict:
    """Final consolidated bars by (pair "BASE/QUOTE", window start): {price, constituents, excluded,
    coverage, trade_count, included_trade_count}. Duplicate trade ids of a venue count once.
    ``statuses``: (venue, time us, status) of collectors; a venue whose last status at a window's
    last microsecond, that day, is ``disconnected`` is excluded as disconnected."""
    quote_as = quote_as or {}
    seen, unique = set(), []
    for trade in trades:
        if (trade[0], trade[3]) not in seen:
            seen.add((trade[0], trade[3]))
            unique.append(trade)
    days = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for venue, base, quote, _id, time, price, amount in unique:
        pair = f"{base}/{quote_as.get(quote, quote)}"
        days[(pair, time // DAY)][time // width * width][venue].append((time, price, amount))
    bars = {}
    for (pair, _day), windows in days.items():
        deviating, last_trade = set(), {}
        for start in sorted(windows):
            venues = windows[start]
            end = start + width
            for venue, venue_trades in venues.items():
                last_trade[venue] = max([last_trade.get(venue, -1)] + [t for t, _, _ in venue_trades])
            reasons = {v: "stale" for v, t in last_trade.items() if end - t > stale_after_us}
            for venue in last_trade:
                known = [
                    (t, status) for v, t, status in statuses if v == venue and t // DAY == start // DAY and t < end
                ]
                if known and max(known)[1] == "disconnected":
                    reasons[venue] = "disconnected"
            vwaps = {v: _vwap(ts) for v, ts in venues.items() if v not in reasons and _vwap(ts) is not None}
            for venue, vwap in vwaps.items():
                peers = _peer_median(vwap, [w for v, w in vwaps.items() if v != venue])
                if peers is None or peers <= 0:
                    continue
                off = abs(vwap / peers - 1)
                if venue in deviating and off <= deviation / 2:
                    deviating.remove(venue)
                elif venue not in deviating and off > deviation:
                    deviating.add(venue)
            reasons.update({v: "deviation" for v in vwaps if v in deviating})
            included = sorted(v for v in vwaps if v not in reasons)
            price, used = partitioned_price([t for v in included for t in venues[v]], start, width, partitions)
            bars[(pair, start)] = {
                "price": price if len(included) >= min_constituents else None,
                "constituents": ",".join(included),
                "excluded": json.dumps(dict(sorted(reasons.items())), sort_keys=True),
                "coverage": used / partitions,
                "trade_count": sum(len(ts) for ts in venues.values()),
                "included_trade_count": sum(len(venues[v]) for v in included),
            }
    return bars
