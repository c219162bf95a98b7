"""Tardis.dev normalized ``trades`` CSV: exchange,symbol,timestamp,local_timestamp,id,side,price,amount.

Times are microseconds; ``side`` is already the taker (aggressor) side. Some exchanges give no
trade id; those rows get one derived from file and line, so re-reading a file dedupes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.formats.common import reject_failed, trades_from_fields
from io_connectors.formats.delimited import parse_float, parse_int, split_fields
from io_connectors.formats.trade_ids import derived_trade_ids
from io_connectors.raw_batch import RawBatch

NAMES = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]


def _non_empty(column: pa.Array) -> np.ndarray:
    """Where a string column holds text (a null counts as empty)."""
    return pc.greater(pc.utf8_length(pc.fill_null(column, "")), 0).to_numpy(zero_copy_only=False)


def parse_tardis_trades(raw: RawBatch, exchange: str | None = None, symbol: str | None = None):
    fields = split_fields(raw, {len(NAMES)}, [NAMES])
    c = {name: fields.column(j) for j, name in enumerate(NAMES)}
    times, ok_time = parse_int(c["timestamp"])
    local_times, ok_local = parse_int(c["local_timestamp"])
    prices, ok_price = parse_float(c["price"])
    amounts, ok_amount = parse_float(c["amount"])
    good = reject_failed(
        fields,
        [
            (_non_empty(c["exchange"]), "exchange is empty"),
            (_non_empty(c["symbol"]), "symbol is empty"),
            (ok_time, "timestamp is not integer microseconds"),
            (ok_local | ~_non_empty(c["local_timestamp"]), "local_timestamp is not integer microseconds"),
            (ok_price, "price is not a number"),
            (ok_amount, "amount is not a number"),
        ],
        raw.source,
    )
    index = pa.array(np.flatnonzero(good), pa.int64())
    symbols = c["symbol"].take(index)
    ids = c["id"].take(index)
    missing_id = ~_non_empty(ids)
    if missing_id.any():
        derived = derived_trade_ids(raw.source, fields.line_numbers[good])
        ids = pc.if_else(pa.array(missing_id), derived, ids)
    local_present = ok_local[good]
    receive = pa.array(local_times[good], pa.int64(), mask=~local_present)
    trades = trades_from_fields(
        fields,
        good,
        raw.source,
        exchange=exchange or pc.utf8_lower(c["exchange"].take(index)),
        symbol=symbols,
        trade_id=ids,
        price=prices,
        amount=amounts,
        side=pc.utf8_lower(c["side"].take(index)),
        event_time=times,
        receive_time=receive,
    )
    return trades, fields.dead_letters
