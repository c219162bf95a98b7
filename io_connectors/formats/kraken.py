"""Kraken's downloadable trade history CSV: timestamp,price,volume with no header, no id, no side.

Timestamps are Unix seconds (possibly fractional). The trade id is derived from file and line,
which is stable across re-reads of the same file; the taker side is unknown.
"""

from __future__ import annotations

import numpy as np

from io_connectors.formats.common import reject_failed, trades_from_fields
from io_connectors.formats.delimited import parse_float, split_fields
from io_connectors.formats.trade_ids import derived_trade_ids
from io_connectors.raw_batch import RawBatch

NAMES = ["timestamp", "price", "volume"]


def parse_kraken_trades(raw: RawBatch, exchange: str = "kraken", symbol: str | None = None):
    symbol = symbol or raw.symbol_hint
    fields = split_fields(raw, {3}, [NAMES])
    seconds, ok_time = parse_float(fields.column(0))
    prices, ok_price = parse_float(fields.column(1))
    amounts, ok_amount = parse_float(fields.column(2))
    finite_time = ok_time & np.isfinite(seconds) & (np.abs(seconds) < 1e12)
    good = reject_failed(
        fields,
        [
            (finite_time, "timestamp is not Unix seconds"),
            (ok_price, "price is not a number"),
            (ok_amount, "volume is not a number"),
            (np.full(len(fields), symbol is not None), "no symbol: not in the file name and --symbol not given"),
        ],
        raw.source,
    )
    micros = np.round(np.where(finite_time, seconds, 0) * 1_000_000).astype(np.int64)
    trades = trades_from_fields(
        fields,
        good,
        raw.source,
        exchange=exchange,
        symbol=symbol,
        trade_id=derived_trade_ids(raw.source, fields.line_numbers[good]),
        price=prices,
        amount=amounts,
        side="unknown",
        event_time=micros,
    )
    return trades, fields.dead_letters
