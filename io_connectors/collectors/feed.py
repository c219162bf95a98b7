"""What the collector needs to know about one exchange, and nothing else: where to connect, what to
send once connected, how to read a frame, and (where the exchange allows it) how to fetch missed trades."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Sequence


@dataclass(frozen=True)
class ExchangeFeed:
    name: str
    ws_url: str  # default public websocket base
    rest_url: str | None  # default public REST base, where missed trades can be fetched
    channels: tuple[str, ...]  # the first is the default
    symbol_pattern: str  # how the exchange spells an instrument, for a clear error on a typo
    symbol_example: str
    connect_url: Callable[[str, Sequence[str], str], str]  # (base, symbols, channel) -> URL to open
    subscriptions: Callable[[Sequence[str], str], list[dict]]  # (symbols, channel) -> messages to send
    parse_frame: Callable[[str | bytes, int], list[dict]]  # (frame, receive time us) -> trade records
    sequential_ids: bool = False  # ids are consecutive per symbol, so a jump is a gap
    # (rest, base, symbol, channel, first_id, last_id) -> pages of the missed trades
    fetch_range: Callable[..., AsyncIterator[list[dict]]] | None = None

    def canonical_symbols(self, text: str) -> list[str]:
        """``"btcusdt, ETHUSDT"`` -> ``["BTCUSDT", "ETHUSDT"]``; raises ValueError naming a bad one."""
        symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
        if not symbols:
            raise ValueError("no symbols given")
        for symbol in symbols:
            if not re.fullmatch(self.symbol_pattern, symbol):
                raise ValueError(f"{symbol!r} is not a {self.name} symbol (e.g. {self.symbol_example})")
        return list(dict.fromkeys(symbols))
