"""The checks every exchange's frames share, so each exchange module only says where its fields are.

A frame that cannot become trades raises ``FrameError`` carrying a dead-letter reason
(``malformed``, ``missing_field``, ``bad_price``, ``non_finite_amount``, ``unknown_side`` ...).
An exchange that refuses what we asked for raises ``ExchangeRejected``: no retry can fix that.
"""

from __future__ import annotations

import json
import math
import time

from io_connectors.formats.coinbase import iso_to_micros


class FrameError(ValueError):
    """One frame that cannot be read as trades; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ExchangeRejected(RuntimeError):
    """The exchange answered our subscription with an error (e.g. an unknown symbol)."""


def now_micros() -> int:
    return time.time_ns() // 1000


def decode_json(frame: str | bytes):
    try:
        return json.loads(frame)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise FrameError("malformed", f"not JSON: {error}") from None


def json_object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise FrameError("malformed", f"{what} is not a JSON object")
    return value


def field(record: dict, name: str):
    value = json_object(record, "the record").get(name)
    if value is None or value == "":
        raise FrameError("missing_field", f"missing field {name!r}")
    return value


def list_field(record: dict, name: str) -> list:
    value = field(record, name)
    if not isinstance(value, list):
        raise FrameError("malformed", f"field {name!r} is not a list")
    return value


def decimal(record: dict, name: str, meaning: str) -> float:
    """A finite number sent as a JSON number or a decimal string (``meaning``: price or amount)."""
    value = field(record, name)
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError
        number = float(value)
    except (ValueError, OverflowError):
        raise FrameError(f"bad_{meaning}", f"{meaning} {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise FrameError(f"non_finite_{meaning}", f"{meaning} {name}={value!r} is not finite")
    return number


def integer(record: dict, name: str) -> int:
    """A non-negative integer (ids and epoch times), sent as a JSON number or a digit string."""
    value = field(record, name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise FrameError("malformed", f"{name}={value!r} is not an integer")


def rfc3339_micros(record: dict, name: str) -> int:
    """RFC 3339 text with a zone; digits beyond microseconds (Coinbase sends nanoseconds) are dropped."""
    value = field(record, name)
    try:
        return iso_to_micros(str(value))
    except (ValueError, OverflowError):
        raise FrameError("malformed", f"{name}={value!r} is not an RFC 3339 time with a zone") from None


def one_of(record: dict, name: str, mapping: dict, reason: str = "malformed"):
    """The field's value translated by ``mapping``; any other value is a ``reason`` error."""
    value = field(record, name)
    for key, translated in mapping.items():
        if type(value) is type(key) and value == key:  # no 1 for True
            return translated
    raise FrameError(reason, f"{name}={value!r} is not one of {', '.join(map(repr, mapping))}")


def trade_record(
    *,
    exchange: str,
    symbol: str,
    pair: tuple[str | None, str | None],
    trade_id,
    price: float,
    amount: float,
    side: str,
    event_time: int,
    receive_time: int,
) -> dict:
    """One trade shaped like ``schemas/trade.avsc``."""
    if not isinstance(symbol, str):
        raise FrameError("malformed", f"symbol {symbol!r} is not a string")
    return {
        "exchange": exchange,
        "symbol": symbol,
        "base": pair[0],
        "quote": pair[1],
        "trade_id": str(trade_id),
        "price": price,
        "amount": amount,
        "side": side,
        "event_time": event_time,
        "receive_time": receive_time,
    }
