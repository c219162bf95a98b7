"""Kraken WebSocket v2, ``trade`` channel.

We subscribe with ``snapshot: true``: after every (re)connect Kraken resends its latest trades,
which covers short disconnects; the collector drops what it has already published. Trades are
``{"channel": "trade", "type": "snapshot" | "update", "data": [{"symbol", "side", "price", "qty",
"ord_type", "trade_id", "timestamp"}]}`` where ``side`` is the taker's. Heartbeats, status
messages and subscription acks carry no trades; a failed subscription (``success: false``) stops
the collector with Kraken's error.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from io_connectors.collectors.feed import ExchangeFeed
from io_connectors.collectors.frames import (
    ExchangeRejected,
    decimal,
    decode_json,
    field,
    integer,
    json_object,
    list_field,
    one_of,
    rfc3339_micros,
    trade_record,
)
from io_connectors.formats.symbols import split_by_separator

EXCHANGE = "kraken"
TAKER_SIDE = {"buy": "buy", "sell": "sell"}


@lru_cache(maxsize=None)
def _pair(symbol: str):
    return split_by_separator(symbol)


def trade_from_row(row: dict, receive_time: int) -> dict:
    symbol = field(row, "symbol")
    return trade_record(
        exchange=EXCHANGE,
        symbol=symbol,
        pair=_pair(symbol),
        trade_id=integer(row, "trade_id"),
        price=decimal(row, "price", "price"),
        amount=decimal(row, "qty", "amount"),
        side=one_of(row, "side", TAKER_SIDE, "unknown_side"),
        event_time=rfc3339_micros(row, "timestamp"),
        receive_time=receive_time,
    )


def parse_frame(frame: str | bytes, receive_time: int) -> list[dict]:
    """One websocket frame -> its trades (none for heartbeats, status and acks)."""
    message = json_object(decode_json(frame), "the frame")
    if "method" in message:
        if message.get("success") is False:
            raise ExchangeRejected(
                f"kraken refused {message['method']} {message.get('symbol', '')}: {message.get('error', message)}"
            )
        return []
    if field(message, "channel") != "trade":
        return []
    return [trade_from_row(row, receive_time) for row in list_field(message, "data")]


def subscriptions(symbols: Sequence[str], channel: str) -> list[dict]:
    return [{"method": "subscribe", "params": {"channel": channel, "symbol": list(symbols), "snapshot": True}}]


FEED = ExchangeFeed(
    name=EXCHANGE,
    ws_url="wss://ws.kraken.com/v2",
    rest_url=None,
    channels=("trade",),
    symbol_pattern=r"[A-Z0-9.]{1,20}/[A-Z0-9.]{1,20}",
    symbol_example="BTC/USD",
    connect_url=lambda base, symbols, channel: base,
    subscriptions=subscriptions,
    parse_frame=parse_frame,
)
