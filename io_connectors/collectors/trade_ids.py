"""Per symbol: which trade ids were already published (to drop duplicates) and, for exchanges whose
ids are consecutive, the highest live id (to see gaps, also across reconnects).

Only live trades move the high-water mark; trades fetched to fill a gap are checked for
duplicates but never open a gap of their own. The memory of published ids is bounded per symbol:
a duplicate older than that is published again and left to downstream dedupe.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    symbol: str
    first_id: int
    last_id: int

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


class TradeIds:
    def __init__(self, sequential: bool, remember: int = 100_000):
        self._sequential, self._remember = sequential, remember
        self._seen: dict[str, OrderedDict] = {}
        self._highest: dict[str, int] = {}

    def observe(self, symbol: str, trade_id: str, live: bool = True) -> tuple[bool, Gap | None]:
        """(whether the trade is new, the gap just before it if a live trade skipped ids)."""
        seen = self._seen.setdefault(symbol, OrderedDict())
        new = trade_id not in seen
        if new:
            seen[trade_id] = None
            if len(seen) > self._remember:
                seen.popitem(last=False)
        gap = None
        if self._sequential and live and trade_id.isdigit():
            number, highest = int(trade_id), self._highest.get(symbol)
            if highest is not None and number > highest + 1:
                gap = Gap(symbol, highest + 1, number - 1)
            if highest is None or number > highest:
                self._highest[symbol] = number
        return new, gap
