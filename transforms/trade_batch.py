"""Trades travel as Arrow tables: the trade schema plus where each row came from.

Batches, not single trades, are what make a local backfill fast; every transform in the chain
takes and gives these tables, whether they were read from a file or polled from a stream.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas import arrow_schema
from transforms.arrow_arrays import one_array
from transforms.dead_letter import batch_rows_dead_letters

PROVENANCE_FIELDS = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_offset", pa.int64(), nullable=True),
    # The original record, kept only until validation so dead letters can carry it.
    pa.field("payload", pa.binary(), nullable=True),
]
TRADE_BATCH_SCHEMA = pa.schema(list(arrow_schema("trade")) + PROVENANCE_FIELDS)
TRADE_FIELDS = arrow_schema("trade").names


def make_trade_batch(
    *,
    exchange,
    symbol,
    trade_id,
    price,
    amount,
    side,
    event_time,
    source,
    source_offset=None,
    payload=None,
    base=None,
    quote=None,
    receive_time=None,
) -> pa.Table:
    """Build a batch from columns; scalars are broadcast. Times are integer microseconds."""
    n = len(trade_id)

    def column(value, dtype):
        if value is None:
            return pa.nulls(n, dtype)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return pa.repeat(pa.scalar(value, dtype), n)
        if isinstance(value, pa.ChunkedArray):
            value = one_array(value)
        if isinstance(value, pa.Array):
            return value if value.type == dtype else value.cast(dtype)
        return pa.array(value, dtype)

    ts = pa.timestamp("us", tz="UTC")
    columns = {
        "exchange": column(exchange, pa.string()),
        "symbol": column(symbol, pa.string()),
        "base": column(base, pa.string()),
        "quote": column(quote, pa.string()),
        "trade_id": column(trade_id, pa.string()),
        "price": column(price, pa.float64()),
        "amount": column(amount, pa.float64()),
        "side": column(side, pa.string()),
        "event_time": column(event_time, pa.int64()).cast(ts),
        "receive_time": column(receive_time, pa.int64()).cast(ts),
        "source": column(source, pa.string()),
        "source_offset": column(source_offset, pa.int64()),
        "payload": column(payload, pa.binary()),
    }
    return pa.Table.from_arrays([columns[f.name] for f in TRADE_BATCH_SCHEMA], schema=TRADE_BATCH_SCHEMA)


def without_payload(batch: pa.Table) -> pa.Table:
    """Drop the raw payload once it is no longer needed, so it is never shuffled."""
    return batch.set_column(batch.schema.get_field_index("payload"), "payload", pa.nulls(batch.num_rows, pa.binary()))


def rows_dead_letters(
    batch: pa.Table, rows: list[int], reasons: list[str], messages: list[str], stage: str, event_times: list[int | None]
) -> list[dict]:
    """Dead letters for rows of a trade batch, each with its payload and where it came from."""
    return batch_rows_dead_letters(
        batch,
        rows,
        reasons,
        messages,
        stage,
        event_times,
        record_fields=TRADE_FIELDS,
        time_fields=("event_time", "receive_time"),
        key_fields=("exchange", "symbol"),
    )


def take_rows(batch: pa.Table, mask_or_indices) -> pa.Table:
    index = np.asarray(mask_or_indices)
    if index.dtype == bool:
        index = np.flatnonzero(index)
    return batch.take(pa.array(index, pa.int64()))
