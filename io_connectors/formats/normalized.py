"""Parquet or Avro files already in the normalized trade schema (``schemas/trade.avsc``)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter
from transforms.trade_batch import make_trade_batch

REQUIRED = ["exchange", "symbol", "trade_id", "price", "amount", "side", "event_time"]


def _micros(column: pa.ChunkedArray) -> pa.Array:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
    return column.cast(pa.int64())


def _row_json(table: pa.Table, i: int) -> str:
    return json.dumps({name: table.column(name)[i].as_py() for name in table.column_names}, default=str, sort_keys=True)


def parse_normalized(raw: RawBatch, exchange: str | None = None, symbol: str | None = None):
    table = raw.table
    dead: list[dict] = []
    missing_columns = [name for name in REQUIRED if name not in table.column_names]
    bad = np.zeros(table.num_rows, dtype=bool)
    messages = np.full(table.num_rows, "", dtype=object)
    if missing_columns:
        bad[:] = True
        messages[:] = f"missing column(s): {', '.join(missing_columns)}"
    else:
        for name in REQUIRED:
            nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
            messages[nulls & ~bad] = f"missing field: {name}"
            bad |= nulls
        try:
            price = table.column("price").cast(pa.float64())
            amount = table.column("amount").cast(pa.float64())
            times = _micros(table.column("event_time"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            bad[:] = True
            messages[:] = f"column types do not fit the trade schema: {error}"
    for i in np.flatnonzero(bad).tolist():
        reason = "missing_field" if messages[i].startswith("missing") else "malformed"
        dead.append(dead_letter(reason, messages[i], "parse", _row_json(table, i), raw.source, raw.first_row + i))
    good = ~bad
    if not good.any():
        return make_trade_batch(exchange=[], symbol=[], trade_id=[], price=[], amount=[], side=[], event_time=[],
                                source=raw.source), dead
    index = pa.array(np.flatnonzero(good), pa.int64())
    pick = lambda name: table.column(name).take(index) if name in table.column_names else None
    trades = make_trade_batch(
        exchange=exchange or pick("exchange"), symbol=symbol or pick("symbol"), base=pick("base"), quote=pick("quote"),
        trade_id=pick("trade_id").cast(pa.string()), price=price.take(index), amount=amount.take(index),
        side=pc.utf8_lower(pick("side").cast(pa.string())), event_time=times.take(index),
        receive_time=_micros(pick("receive_time")) if "receive_time" in table.column_names else None,
        source=raw.source, source_offset=np.flatnonzero(good) + raw.first_row)
    return trades, dead
