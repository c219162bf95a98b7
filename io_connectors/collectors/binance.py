"""Binance spot trade streams, ``<symbol>@aggTrade`` and ``<symbol>@trade``, and the REST pages
that fill their gaps.

Both channels carry an id that is consecutive per symbol (``a`` for aggregate trades, ``t`` for
trades), so a jump means missed trades, which ``GET /api/v3/aggTrades`` or
``GET /api/v3/historicalTrades`` return by ``fromId``. ``m`` (the buyer is the maker) true means
the taker sold. ``T`` is the trade time in ms. Several symbols share one combined stream,
``/stream?streams=a/b``, whose frames are ``{"stream": ..., "data": {...}}``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

from io_connectors.collectors.feed import ExchangeFeed
from io_connectors.collectors.frames import (
    ExchangeRejected,
    FrameError,
    decimal,
    decode_json,
    field,
    integer,
    json_object,
    now_micros,
    one_of,
    trade_record,
)
from io_connectors.collectors.rest import RestClient, RestError
from io_connectors.formats.symbols import BINANCE_QUOTES, split_by_quote

EXCHANGE = "binance"
PAGE_LIMIT = 1000  # the most either REST endpoint returns per request
TAKER_SIDE_OF_BUYER_MAKER = {True: "sell", False: "buy"}


class Layout(NamedTuple):
    """Where one Binance trade representation keeps each value."""

    trade_id: str
    price: str
    amount: str
    time_ms: str
    buyer_maker: str


AGG_TRADE = Layout("a", "p", "q", "T", "m")  # the websocket event and the REST aggTrades rows alike
TRADE = Layout("t", "p", "q", "T", "m")  # the websocket trade event
HISTORICAL_TRADE = Layout("id", "price", "qty", "time", "isBuyerMaker")  # REST historicalTrades rows
EVENT_LAYOUTS = {"aggTrade": AGG_TRADE, "trade": TRADE}
REST_ENDPOINTS = {"aggTrade": ("/api/v3/aggTrades", AGG_TRADE), "trade": ("/api/v3/historicalTrades", HISTORICAL_TRADE)}


@lru_cache(maxsize=None)
def _pair(symbol: str):
    return split_by_quote(symbol, BINANCE_QUOTES)


def trade_from_row(row: dict, layout: Layout, symbol: str, receive_time: int) -> dict:
    return trade_record(
        exchange=EXCHANGE,
        symbol=symbol,
        pair=_pair(symbol),
        trade_id=integer(row, layout.trade_id),
        price=decimal(row, layout.price, "price"),
        amount=decimal(row, layout.amount, "amount"),
        side=one_of(row, layout.buyer_maker, TAKER_SIDE_OF_BUYER_MAKER),
        event_time=integer(row, layout.time_ms) * 1000,
        receive_time=receive_time,
    )


def parse_frame(frame: str | bytes, receive_time: int) -> list[dict]:
    """One websocket frame (combined-stream envelope or a bare event) -> its trade."""
    message = json_object(decode_json(frame), "the frame")
    if "error" in message or ("code" in message and "msg" in message):
        raise ExchangeRejected(f"binance refused the request: {message.get('error', message)}")
    if "result" in message and "id" in message:
        return []  # the answer to a SUBSCRIBE request
    event = json_object(field(message, "data"), "data") if "stream" in message else message
    kind = field(event, "e")
    if kind not in EVENT_LAYOUTS:
        raise FrameError("malformed", f"unexpected event type e={kind!r}")
    return [trade_from_row(event, EVENT_LAYOUTS[kind], field(event, "s"), receive_time)]


def connect_url(base: str, symbols: Sequence[str], channel: str) -> str:
    return f"{base.rstrip('/')}/stream?streams=" + "/".join(f"{s.lower()}@{channel}" for s in symbols)


async def fetch_range(rest: RestClient, base: str, symbol: str, channel: str, first_id: int, last_id: int):
    """Yield the trades with ids first_id..last_id page by page (so a long gap is never held in memory);
    fewer if the exchange has no more."""
    path, layout = REST_ENDPOINTS[channel]
    from_id = first_id
    while from_id <= last_id:
        page = await rest.get_json(
            f"{base.rstrip('/')}{path}", {"symbol": symbol, "fromId": from_id, "limit": PAGE_LIMIT}
        )
        if not isinstance(page, list):
            raise RestError(f"{path} answered {str(page)[:200]!r}, not a list of trades")
        if not page:
            return
        received = now_micros()
        try:
            rows = [trade_from_row(row, layout, symbol, received) for row in page]
        except FrameError as error:
            raise RestError(f"{path} sent a trade that cannot be read: {error}") from None
        yield [t for t in rows if first_id <= int(t["trade_id"]) <= last_id]
        next_id = max(int(t["trade_id"]) for t in rows) + 1
        if next_id <= from_id:
            raise RestError(f"{path} does not advance past id {from_id}")
        from_id = next_id


FEED = ExchangeFeed(
    name=EXCHANGE,
    ws_url="wss://stream.binance.com:9443",
    rest_url="https://api.binance.com",
    channels=("aggTrade", "trade"),
    symbol_pattern=r"[A-Z0-9]{2,30}",
    symbol_example="BTCUSDT",
    connect_url=connect_url,
    subscriptions=lambda symbols, channel: [],
    parse_frame=parse_frame,
    sequential_ids=True,
    fetch_range=fetch_range,
)
