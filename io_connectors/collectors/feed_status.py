"""Connection-state records (``schemas/feed_status.avsc``) for one feed's symbols.

A record per (exchange, symbol) on each change: ``connected`` (the run's first subscription),
``disconnected`` with a reason, ``resubscribed`` (subscribed again after a disconnection). A
consumer can then tell a silent market (connected, no trades) from a dead connection, and, by
``disconnected``/``stopped`` at a clean stop, from a collector that is gone. Repeated failures to
reconnect are one disconnection, not one record each. Times are the collector's clock, never
earlier than the feed's previous record, so a clock step back cannot reorder a feed's states.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Callable, Sequence

from io_connectors.collectors.frames import now_micros
from io_connectors.instruments import canonical_pair, shipped_instruments

CONNECTED, DISCONNECTED, RESUBSCRIBED = "connected", "disconnected", "resubscribed"
STOPPED = "stopped"


@lru_cache(maxsize=None)
def collector_id() -> str:
    """``host:pid``: two collectors of one feed publish distinguishable records."""
    return f"{socket.gethostname()}:{os.getpid()}"


def canonical_pairs(exchange: str, symbols: Sequence[str]) -> dict[str, tuple]:
    """Each symbol's canonical (base, quote), as the parsers' instrument lookup gives it."""
    table = shipped_instruments()
    return {symbol: canonical_pair(table, exchange, symbol)[0] for symbol in symbols}


class FeedStatus:
    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        publish: Callable[[dict], None],
        clock: Callable[[], int] = now_micros,
    ):
        self.exchange, self._publish, self._clock = exchange, publish, clock
        self._pairs = canonical_pairs(exchange, symbols)
        self._status: str | None = None
        self._last_time = 0

    @property
    def status(self) -> str | None:
        return self._status

    def connected(self, first: bool) -> None:
        self._change(CONNECTED if first else RESUBSCRIBED, None)

    def disconnected(self, reason: str) -> None:
        if self._status != DISCONNECTED or reason == STOPPED:
            self._change(DISCONNECTED, reason)

    def stopped(self) -> None:
        self.disconnected(STOPPED)

    def _change(self, status: str, reason: str | None) -> None:
        self._status = status
        self._last_time = max(self._clock(), self._last_time)
        for symbol, (base, quote) in self._pairs.items():
            self._publish(
                {
                    "exchange": self.exchange,
                    "symbol": symbol,
                    "base": base,
                    "quote": quote,
                    "status": status,
                    "event_time": self._last_time,
                    "reason": reason,
                    "collector": collector_id(),
                }
            )
