"""Parquet or Avro files already in the normalized trade schema (``schemas/trade.avsc``).

Columns are converted whole where they can be, and value by value where they cannot, so one
bad cell costs one dead letter, never the batch. Timestamps may be Arrow timestamps of any
unit (finer than microseconds is truncated to microseconds) or integer microseconds.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter
from transforms.row_reasons import FirstReasons
from transforms.arrow_arrays import one_array
from transforms.trade_batch import make_trade_batch

REQUIRED = ["exchange", "symbol", "trade_id", "price", "amount", "side", "event_time"]


def _column(table: pa.Table, name: str) -> pa.Array:
    return one_array(table.column(name))


def _converted(values: pa.Array, convert, fallback) -> tuple[pa.Array | None, np.ndarray]:
    """Convert a column at once, or value by value when that fails; returns (values, ok)."""
    try:
        converted = convert(values)
        return converted, ~pc.is_null(converted).to_numpy(zero_copy_only=False) | pc.is_null(values).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
        results, ok = [], []
        for value in values:
            if not value.is_valid:
                results.append(None)
                ok.append(True)
                continue
            try:
                results.append(fallback(value))
                ok.append(True)
            except (ValueError, TypeError, OverflowError, pa.ArrowInvalid):
                results.append(None)
                ok.append(False)
        return pa.array(results), np.array(ok, dtype=bool)


def _all_valid(values: pa.Array) -> np.ndarray:
    return np.ones(len(values), dtype=bool)


def _to_float(values: pa.Array):
    if values.type == pa.float64():
        return values, _all_valid(values)
    return _converted(values, lambda v: v.cast(pa.float64()), lambda s: float(s.as_py()))


def _to_micros(values: pa.Array):
    if values.type == pa.int64() or (pa.types.is_timestamp(values.type) and values.type.unit == "us"):
        return values.cast(pa.int64()), _all_valid(values)
    if pa.types.is_timestamp(values.type):
        options = pc.CastOptions(pa.timestamp("us", tz=values.type.tz), allow_time_truncate=True)
        return _converted(values, lambda v: pc.cast(v, options=options).cast(pa.int64()),
                          lambda s: int(pc.cast(pa.array([s.value], values.type), options=options).cast(pa.int64())[0].as_py()))
    return _converted(values, lambda v: v.cast(pa.int64()), lambda s: int(s.as_py()))


def event_time_micros(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(micros, usable) per row of a raw table: what the parser will read as each row's event time.

    Planning a time slice of a file uses it, so a row lands in exactly the slice whose parser
    reads it; a row with no usable time has no slice of its own (``usable`` is False).
    """
    if "event_time" not in table.column_names:
        return np.zeros(table.num_rows, np.int64), np.zeros(table.num_rows, bool)
    micros, ok = _to_micros(_column(table, "event_time"))
    if not micros.null_count:  # the usual column: every time usable, read without a copy
        return micros.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), ok
    usable = ok & ~pc.is_null(micros).to_numpy(zero_copy_only=False)
    return pc.fill_null(micros, 0).to_numpy(zero_copy_only=False).astype(np.int64), usable


def _row_json(table: pa.Table, i: int) -> str:
    """The original row as JSON; timestamps as integers in their own unit, so no conversion can fail."""
    row = {}
    for name in table.column_names:
        column = table.column(name)
        value = column[i].value if pa.types.is_timestamp(column.type) and column[i].is_valid else column[i].as_py()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        row[name] = value
    return json.dumps(row, default=str, sort_keys=True)


def _present(table: pa.Table, name: str) -> bool:
    return name in table.column_names


def parse_normalized(raw: RawBatch, exchange: str | None = None, symbol: str | None = None):
    """``exchange``/``symbol`` fill in rows (or files) that lack them; they never overwrite."""
    table = raw.table
    n = table.num_rows
    reasons = FirstReasons(n)
    reject = reasons.flag

    fills = {"exchange": exchange, "symbol": symbol}
    columns = {}
    for name in REQUIRED:
        if _present(table, name):
            column = _column(table, name)
            if fills.get(name):
                column = pc.fill_null(column.cast(pa.string()), fills[name])
            columns[name] = column
        elif fills.get(name):
            columns[name] = pa.repeat(pa.scalar(fills[name], pa.string()), n)
        else:
            reject(np.ones(n, dtype=bool), f"missing column: {name}")
    if not reasons.codes.all():
        for name in REQUIRED:
            if columns[name].null_count:
                reject(pc.is_null(columns[name]).to_numpy(zero_copy_only=False), f"missing field: {name}")
        price, ok = _to_float(columns["price"])
        reject(~ok, "price is not a number")
        amount, ok = _to_float(columns["amount"])
        reject(~ok, "amount is not a number")
        times, ok = _to_micros(columns["event_time"])
        reject(~ok, "event_time is not a timestamp")
        receive = None
        if _present(table, "receive_time"):
            receive, ok = _to_micros(_column(table, "receive_time"))
            reject(~ok, "receive_time is not a timestamp")
        text = {}
        for name in ("exchange", "symbol", "trade_id", "side"):
            kind = columns[name].type
            if kind == pa.string():
                text[name] = columns[name]
                continue
            if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
                text[name] = columns[name].cast(pa.string())  # read as a dictionary; decoding cannot fail
                continue
            text[name], ok = _converted(columns[name], lambda v: v.cast(pa.string()), lambda s: str(s.as_py()))
            reject(~ok, f"{name} is not text")
    row_numbers = raw.table_row_numbers()
    dead = [dead_letter("missing_field" if message.startswith("missing") else "malformed", message, "parse",
                        _row_json(table, i), raw.source, int(row_numbers[i]))
            for i, message in reasons.rejected()]
    good = reasons.good()
    if not good.any():
        return make_trade_batch(exchange=[], symbol=[], trade_id=[], price=[], amount=[], side=[], event_time=[],
                                source=raw.source), dead
    index = pa.array(np.flatnonzero(good), pa.int64())
    pick = (lambda values: values) if good.all() else (lambda values: values.take(index))
    optional = lambda name: pick(_column(table, name).cast(pa.string())) if _present(table, name) else None
    # Sides are lower-cased byte-wise: every valid side is ASCII, and any other stays invalid.
    trades = make_trade_batch(
        exchange=pick(text["exchange"]), symbol=pick(text["symbol"]), base=optional("base"),
        quote=optional("quote"), trade_id=pick(text["trade_id"]), price=pick(price),
        amount=pick(amount), side=pc.ascii_lower(pick(text["side"])), event_time=pick(times),
        receive_time=None if receive is None else pick(receive),
        source=raw.source, source_offset=row_numbers[good])
    return trades, dead
