"""Coinbase Advanced Trade websocket, ``market_trades`` channel (plus ``heartbeats``, which keeps a
quiet subscription open).

Frames are ``{"channel", "timestamp", "sequence_num", "events": [{"type": "snapshot" | "update",
"trades": [...]}]}``; a snapshot (the latest trades, sent on every subscribe) overlaps what we
already have, and the collector drops what it has seen. ``side`` is read as the maker's side, as
on Coinbase's other public trade feeds, so the taker side is its opposite. ``time`` is RFC 3339
with nanoseconds, kept to microseconds.
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
    json_object,
    list_field,
    one_of,
    rfc3339_micros,
    trade_record,
)
from io_connectors.formats.symbols import split_by_separator

EXCHANGE = "coinbase"
TAKER_SIDE_OF_MAKER = {"BUY": "sell", "SELL": "buy"}


@lru_cache(maxsize=None)
def _pair(symbol: str):
    return split_by_separator(symbol)


def trade_from_row(row: dict, receive_time: int) -> dict:
    symbol = field(row, "product_id")
    return trade_record(
        exchange=EXCHANGE,
        symbol=symbol,
        pair=_pair(symbol),
        trade_id=field(row, "trade_id"),
        price=decimal(row, "price", "price"),
        amount=decimal(row, "size", "amount"),
        side=one_of(row, "side", TAKER_SIDE_OF_MAKER, "unknown_side"),
        event_time=rfc3339_micros(row, "time"),
        receive_time=receive_time,
    )


def parse_frame(frame: str | bytes, receive_time: int) -> list[dict]:
    """One websocket frame -> its trades (none for subscription acks and heartbeats)."""
    message = json_object(decode_json(frame), "the frame")
    if message.get("type") == "error":
        raise ExchangeRejected(f"coinbase refused the subscription: {message.get('message', message)}")
    if field(message, "channel") != "market_trades":
        return []
    return [
        trade_from_row(row, receive_time)
        for event in list_field(message, "events")
        for row in list_field(event, "trades")
    ]


def subscriptions(symbols: Sequence[str], channel: str) -> list[dict]:
    return [
        {"type": "subscribe", "product_ids": list(symbols), "channel": channel},
        {"type": "subscribe", "channel": "heartbeats"},
    ]


FEED = ExchangeFeed(
    name=EXCHANGE,
    ws_url="wss://advanced-trade-ws.coinbase.com",
    rest_url=None,
    channels=("market_trades",),
    symbol_pattern=r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}",
    symbol_example="BTC-USD",
    connect_url=lambda base, symbols, channel: base,
    subscriptions=subscriptions,
    parse_frame=parse_frame,
)
