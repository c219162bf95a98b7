"""Parquet or Avro files already in the normalized trade schema (``schemas/trade.avsc``).

Columns are converted whole where they can be, and value by value where they cannot, so one
bad cell costs one dead letter, never the batch. Timestamps may be Arrow timestamps of any
unit (finer than microseconds is truncated to microseconds) or integer microseconds. Text
columns may be binary: each value is decoded as UTF-8, and a value that is not UTF-8 costs its
row (``bad_encoding``). A column the parser reads that appears twice in a file makes every row
of it a dead letter: which copy was meant cannot be known.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.raw_batch import RawBatch
from transforms.arrow_arrays import one_array
from transforms.dead_letter import dead_letter
from transforms.row_reasons import FirstReasons
from transforms.trade_batch import make_trade_batch

REQUIRED = ["exchange", "symbol", "trade_id", "price", "amount", "side", "event_time"]
OPTIONAL = ["base", "quote", "receive_time"]
TEXT = ["exchange", "symbol", "trade_id", "side", "base", "quote"]
_INT64_RANGE = range(-(2**63), 2**63)
_NOT_UTF8 = "is not UTF-8"


def _column(table: pa.Table, name: str) -> pa.Array:
    """The column of that name; the first of them when a file repeats it."""
    return one_array(table.column(table.column_names.index(name)))


def _is_nested(kind: pa.DataType) -> bool:
    return pa.types.is_nested(kind) or (pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type))


def _converted(values: pa.Array, convert, fallback, kind: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Convert a column at once, or value by value when that fails; returns (values, ok)."""
    try:
        converted = convert(values)
        return converted, ~pc.is_null(converted).to_numpy(zero_copy_only=False) | pc.is_null(values).to_numpy(
            zero_copy_only=False
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
        if _is_nested(values.type):  # a list or a struct is no single value: only its nulls pass
            return pa.nulls(len(values), kind), pc.is_null(values).to_numpy(zero_copy_only=False)
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
        return pa.array(results, kind), np.array(ok, dtype=bool)


def _all_valid(values: pa.Array) -> np.ndarray:
    return np.ones(len(values), dtype=bool)


def _int64(value) -> int:
    number = int(value)
    if number not in _INT64_RANGE:
        raise OverflowError(f"{number} does not fit in 64 bits")
    return number


def _to_float(values: pa.Array):
    if values.type == pa.float64():
        return values, _all_valid(values)
    return _converted(values, lambda v: v.cast(pa.float64()), lambda s: float(s.as_py()), pa.float64())


def _to_micros(values: pa.Array):
    if values.type == pa.int64() or (pa.types.is_timestamp(values.type) and values.type.unit == "us"):
        return values.cast(pa.int64()), _all_valid(values)
    if pa.types.is_timestamp(values.type):
        options = pc.CastOptions(pa.timestamp("us", tz=values.type.tz), allow_time_truncate=True)
        return _converted(
            values,
            lambda v: pc.cast(v, options=options).cast(pa.int64()),
            lambda s: int(pc.cast(pa.array([s.value], values.type), options=options).cast(pa.int64())[0].as_py()),
            pa.int64(),
        )
    return _converted(values, lambda v: v.cast(pa.int64()), lambda s: _int64(s.as_py()), pa.int64())


def _to_text(values: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(strings, is text, is UTF-8) per value. Binary values are decoded one by one only when the
    whole column is not valid UTF-8; values of nested types are not text."""
    if values.type == pa.string():
        return values, _all_valid(values), _all_valid(values)
    if pa.types.is_dictionary(values.type) and not pa.types.is_string(values.type.value_type):
        values = values.dictionary_decode()
    try:
        return values.cast(pa.string()), _all_valid(values), _all_valid(values)
    except pa.ArrowInvalid:  # binary that is not all UTF-8
        return _decoded_one_by_one(values)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(len(values), pa.string()), pc.is_null(values).to_numpy(zero_copy_only=False), _all_valid(values)


def _decoded_one_by_one(values: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    strings, is_text, utf8 = [], np.ones(len(values), bool), np.ones(len(values), bool)
    for i, value in enumerate(values.to_pylist()):
        text = None
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                utf8[i] = False
        elif value is not None:
            is_text[i] = False
        strings.append(text)
    return pa.array(strings, pa.string()), is_text, utf8


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


def _json_value(value):
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _json_default(value):
    """Bytes as text, a byte that is not UTF-8 as a lone surrogate (which JSON escapes), so the
    original bytes can be recovered; anything else JSON has no type for as its text."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _rows_json(table: pa.Table, rows: list[int]) -> list[str]:
    """The original rows as JSON objects; timestamps as integers in their own unit, so no
    conversion can fail. A repeated column name appears as often as the file has it."""
    picked = table.take(pa.array(rows, pa.int64()))
    columns = []
    for name, column in zip(table.column_names, picked.columns):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append((json.dumps(name), column.to_pylist()))
    columns.sort(key=lambda named: named[0])
    return [
        "{"
        + ", ".join(
            f"{name}: {json.dumps(_json_value(values[k]), default=_json_default, sort_keys=True)}"
            for name, values in columns
        )
        + "}"
        for k in range(len(rows))
    ]


def _reason(message: str) -> str:
    if message.startswith("missing"):
        return "missing_field"
    return "bad_encoding" if message.endswith(_NOT_UTF8) else "malformed"


def _read_columns(table: pa.Table, fills: dict, reject) -> dict[str, pa.Array]:
    """The required and optional columns present (required ones filled in from ``fills``); rows
    are rejected for a missing or repeated column."""
    n = table.num_rows
    counts = Counter(table.column_names)
    for name in REQUIRED + OPTIONAL:
        if counts[name] > 1:
            reject(np.ones(n, dtype=bool), f"column {name} appears {counts[name]} times")
    columns = {}
    for name in REQUIRED + OPTIONAL:
        if counts[name]:
            columns[name] = _column(table, name)
        elif fills.get(name):
            columns[name] = pa.repeat(pa.scalar(fills[name], pa.string()), n)
        elif name in REQUIRED:
            reject(np.ones(n, dtype=bool), f"missing column: {name}")
    return columns


def _converted_columns(columns: dict[str, pa.Array], fills: dict, reject) -> dict[str, pa.Array]:
    """Every column in its trade type, rejecting the rows whose value cannot be converted."""
    converted = {}
    for name in REQUIRED:
        if columns[name].null_count and not fills.get(name):  # a fill stands in for a missing value
            reject(pc.is_null(columns[name]).to_numpy(zero_copy_only=False), f"missing field: {name}")
    for name, convert, what in (
        ("price", _to_float, "a number"),
        ("amount", _to_float, "a number"),
        ("event_time", _to_micros, "a timestamp"),
        ("receive_time", _to_micros, "a timestamp"),
    ):
        if name in columns:
            converted[name], ok = convert(columns[name])
            reject(~ok, f"{name} is not {what}")
    for name in TEXT:
        if name in columns:
            text, is_text, utf8 = _to_text(columns[name])
            reject(~is_text, f"{name} is not text")
            reject(~utf8, f"{name} {_NOT_UTF8}")
            converted[name] = pc.fill_null(text, fills[name]) if fills.get(name) else text
    return converted


def parse_normalized(raw: RawBatch, exchange: str | None = None, symbol: str | None = None):
    """``exchange``/``symbol`` fill in rows (or files) that lack them; they never overwrite."""
    table = raw.table
    reasons = FirstReasons(table.num_rows)
    fills = {"exchange": exchange, "symbol": symbol}
    columns = _read_columns(table, fills, reasons.flag)
    values = _converted_columns(columns, fills, reasons.flag) if not reasons.codes.all() else {}
    row_numbers = raw.table_row_numbers()
    rejected = reasons.rejected()
    payloads = _rows_json(table, [i for i, _ in rejected]) if rejected else []
    dead = [
        dead_letter(_reason(message), message, "parse", payload, raw.source, int(row_numbers[i]))
        for (i, message), payload in zip(rejected, payloads)
    ]
    good = reasons.good()
    if not good.any():
        return make_trade_batch(
            exchange=[], symbol=[], trade_id=[], price=[], amount=[], side=[], event_time=[], source=raw.source
        ), dead
    index = pa.array(np.flatnonzero(good), pa.int64())
    pick = (lambda name: values[name]) if good.all() else (lambda name: values[name].take(index))

    def pick_if_present(name):
        return pick(name) if name in values else None

    # Sides are lower-cased byte-wise: every valid side is ASCII, and any other stays invalid.
    trades = make_trade_batch(
        exchange=pick("exchange"),
        symbol=pick("symbol"),
        base=pick_if_present("base"),
        quote=pick_if_present("quote"),
        trade_id=pick("trade_id"),
        price=pick("price"),
        amount=pick("amount"),
        side=pc.ascii_lower(pick("side")),
        event_time=pick("event_time"),
        receive_time=pick_if_present("receive_time"),
        source=raw.source,
        source_offset=row_numbers[good],
    )
    return trades, dead
