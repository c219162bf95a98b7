"""Coinbase Exchange trades as JSON lines, as the REST trades endpoint returns them.

``side`` there is the maker's side ("buy" means a resting buy order was hit), so the taker
side is the opposite. ``time`` is ISO-8601; ``product_id``, when present, is the symbol.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter
from transforms.event_time import datetime_to_micros
from transforms.trade_batch import make_trade_batch

TAKER_SIDE_OF_MAKER = {"buy": "sell", "sell": "buy"}


def iso_to_micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("time has no timezone")
    return datetime_to_micros(moment)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} is not a number")
    number = float(value)
    if (
        isinstance(value, str)
        and not math.isfinite(number)
        and value.strip().lower() not in ("nan", "inf", "-inf", "infinity")
    ):
        raise ValueError(f"{name} is not a number")
    return number


def _text(value, name: str) -> str:
    """The value as text that UTF-8 can hold: JSON's escapes can spell a lone surrogate, which it cannot."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} holds a lone surrogate") from None
    return text


def _trade(line: bytes, default_symbol: str | None) -> tuple:
    """(trade_id, price, amount, taker side, event time, symbol) of one line, or ValueError."""
    try:
        record = json.loads(line.decode("utf-8-sig"))
    except RecursionError:  # nesting deeper than the decoder's stack
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("trade_id", "side", "size", "price", "time") if record.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    if isinstance(record["trade_id"], bool) or not isinstance(record["trade_id"], (str, int)):
        raise ValueError("trade_id is not a string or an integer")
    maker_side = _text(record["side"], "side").lower()
    symbol = record.get("product_id") or default_symbol
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("no symbol: no product_id, not in the file name, and --symbol not given")
    return (
        _text(record["trade_id"], "trade_id"),
        _number(record["price"], "price"),
        _number(record["size"], "size"),
        TAKER_SIDE_OF_MAKER.get(maker_side, maker_side),
        iso_to_micros(str(record["time"])),
        _text(symbol, "product_id"),
    )


def parse_coinbase_trades(raw: RawBatch, exchange: str = "coinbase", symbol: str | None = None):
    rows, dead = {k: [] for k in ("trade_id", "price", "amount", "side", "event_time", "symbol", "line", "payload")}, []
    for line, number in zip(raw.payloads.to_pylist(), raw.line_numbers.tolist()):
        if not line.strip():
            continue
        try:
            values = _trade(line, symbol or raw.symbol_hint)
        except UnicodeDecodeError as error:
            dead.append(dead_letter("bad_encoding", f"not UTF-8: {error}", "parse", line, raw.source, number))
            continue
        except (ValueError, TypeError, OverflowError) as error:  # json.JSONDecodeError is a ValueError
            dead.append(dead_letter("malformed", str(error), "parse", line, raw.source, number))
            continue
        for key, value in zip(("trade_id", "price", "amount", "side", "event_time", "symbol"), values):
            rows[key].append(value)
        rows["line"].append(number)
        rows["payload"].append(line)
    trades = make_trade_batch(
        exchange=exchange,
        symbol=rows["symbol"],
        trade_id=rows["trade_id"],
        price=rows["price"],
        amount=rows["amount"],
        side=rows["side"],
        event_time=rows["event_time"],
        source=raw.source,
        source_offset=rows["line"],
        payload=rows["payload"],
    )
    return trades, dead
