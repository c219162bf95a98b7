"""A trade chunk: the trades of one (exchange, symbol, window) as plain numpy columns.

Chunks are what Beam shuffles between the keyed stages, once per window, so they are built to
be cheap to pickle: their columns travel as one bytes buffer (pickling a dozen numpy arrays
pays a dozen arrays' overhead), trade ids are packed into one buffer too, and the dedupe
identity hashes are computed once per batch rather than once per chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_arrays import one_array, one_value
from transforms.event_time import micros_to_iso
from transforms.partial_bar import partial_bars_of_segments

SIDE_NAMES = ("buy", "sell", "unknown")  # the valid taker sides; a side's code in a chunk is its index
_HASH_SEED = 0x5EED


def trade_hashes(
    trade_ids: pa.Array, times: np.ndarray, prices: np.ndarray, amounts: np.ndarray, sides: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a hash of the trade id, and a hash of what the trade says (time, price, amount, side code).

    Two copies of one trade share both; a conflicting copy shares only the first.
    """
    ids = pl.from_arrow(trade_ids).hash(seed=_HASH_SEED).to_numpy()
    content = pl.DataFrame({"event_time": times, "price": prices, "amount": amounts, "side": sides})
    content = content.hash_rows(seed=_HASH_SEED).to_numpy()
    return ids, content


# Validated sides are exactly SIDE_NAMES, whose lengths differ: a side's length is its code.
_CODE_BY_LENGTH = np.full(max(map(len, SIDE_NAMES)) + 1, SIDE_NAMES.index("unknown"), dtype=np.int8)
_CODE_BY_LENGTH[[len(name) for name in SIDE_NAMES]] = np.arange(len(SIDE_NAMES))
assert len({len(name) for name in SIDE_NAMES}) == len(SIDE_NAMES)


def side_codes(sides: pa.Array) -> np.ndarray:
    """Codes into SIDE_NAMES of validated sides (each one of SIDE_NAMES), read from the string
    lengths alone: one pass over the offsets, none over the text."""
    return _CODE_BY_LENGTH[pc.binary_length(sides).to_numpy(zero_copy_only=False)]


def _source_codes(sources: pa.ChunkedArray) -> tuple[tuple, np.ndarray]:
    """(distinct sources, each row's index into them); a batch usually comes from one file."""
    sources = one_array(sources)
    if len(sources) and one_value(sources):
        return (sources[0].as_py(),), np.zeros(len(sources), dtype=np.int32)
    encoded = pc.dictionary_encode(sources)
    return tuple(encoded.dictionary.to_pylist()), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)


def _string_buffers(strings: pa.Array) -> tuple[bytes, np.ndarray]:
    """Pack a string array into (bytes, offsets) without touching each string in Python."""
    strings = strings.cast(pa.string())
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    packed = data.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes() if data is not None else b""
    return packed, (offsets - offsets[0]).astype(np.int32)


# The numpy columns of a chunk, widest first, so each lands aligned in the packed buffer.
_COLUMNS = (
    "event_time",
    "price",
    "amount",
    "id_hash",
    "content_hash",
    "source_offset",
    "receive_time",
    "trade_id_offsets",
    "source_index",
    "side",
)
_DTYPES: dict[str, np.dtype] = {}


def _packed(arrays: list[np.ndarray | None]) -> tuple[bytes, tuple]:
    """Arrays as one buffer and, per array, its dtype and length (None stays None)."""
    present = [a for a in arrays if a is not None]
    layout = tuple(None if a is None else (a.dtype.str, len(a)) for a in arrays)
    return b"".join(np.ascontiguousarray(a).data for a in present), layout


def _unpacked(buffer: bytes, layout: tuple) -> list[np.ndarray | None]:
    """Read-only array views into the buffer, in ``layout``'s order."""
    arrays, position = [], 0
    for spec in layout:
        if spec is None:
            arrays.append(None)
            continue
        dtype = _DTYPES.get(spec[0]) or _DTYPES.setdefault(spec[0], np.dtype(spec[0]))
        arrays.append(np.frombuffer(buffer, dtype, spec[1], position))
        position += dtype.itemsize * spec[1]
    return arrays


def _chunk_from_pickle(fields: tuple, buffer: bytes, layout: tuple) -> "TradeChunk":
    columns = dict(zip(_COLUMNS, _unpacked(buffer, layout)))
    (exchange, symbol, base, quote, window_start, trade_id_bytes, sources, summary, distinct_ids) = fields
    return TradeChunk(
        exchange,
        symbol,
        base,
        quote,
        window_start,
        columns["event_time"],
        columns["price"],
        columns["amount"],
        columns["side"],
        columns["id_hash"],
        columns["content_hash"],
        trade_id_bytes,
        columns["trade_id_offsets"],
        sources,
        columns["source_index"],
        columns["source_offset"],
        columns["receive_time"],
        summary,
        distinct_ids,
    )


@dataclass
class TradeChunk:
    exchange: str
    symbol: str
    base: str | None
    quote: str | None
    window_start: int
    event_time: np.ndarray  # int64 microseconds
    price: np.ndarray
    amount: np.ndarray
    side: np.ndarray  # int8 codes into SIDE_NAMES
    id_hash: np.ndarray
    content_hash: np.ndarray
    trade_id_bytes: bytes
    trade_id_offsets: np.ndarray
    sources: tuple
    source_index: np.ndarray
    source_offset: np.ndarray  # -1 where unknown
    receive_time: np.ndarray | None = None  # int64, -1 where unknown
    summary: object = None  # the PartialBar of all rows, when computed in bulk with the chunk
    distinct_ids: bool = False  # known in bulk: no two rows share a trade id

    def __len__(self) -> int:
        return len(self.event_time)

    @property
    def nbytes(self) -> int:
        """About its encoded size (``transforms.sized_coders``)."""
        arrays = (getattr(self, name) for name in _COLUMNS)
        return sum(a.nbytes for a in arrays if a is not None) + len(self.trade_id_bytes)

    def __reduce__(self):
        buffer, layout = _packed([getattr(self, name) for name in _COLUMNS])
        fields = (
            self.exchange,
            self.symbol,
            self.base,
            self.quote,
            self.window_start,
            self.trade_id_bytes,
            self.sources,
            self.summary,
            self.distinct_ids,
        )
        return _chunk_from_pickle, (fields, buffer, layout)

    def trade_id(self, i: int) -> str:
        return self.trade_id_bytes[self.trade_id_offsets[i] : self.trade_id_offsets[i + 1]].decode("utf-8")

    def _trade_id_array(self) -> pa.LargeStringArray:
        """Every row's trade id as one Arrow array over the chunk's buffers, nothing decoded yet."""
        offsets = np.ascontiguousarray(self.trade_id_offsets, dtype=np.int64)
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(offsets), pa.py_buffer(self.trade_id_bytes))

    def trade_ids(self) -> list[str]:
        """Every row's trade id, decoded in one pass."""
        return self._trade_id_array().to_pylist()

    def integer_trade_ids(self) -> np.ndarray | None:
        """Every row's trade id as an integer, when every id is one (decimal digits); else None."""
        ids = self._trade_id_array()
        if not len(ids) or not pc.all(pc.utf8_is_digit(ids)).as_py():
            return None
        try:
            return pc.cast(ids, pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # digits of other scripts, or past int64
            return None

    def source(self, i: int) -> str:
        return self.sources[self.source_index[i]]

    def offset(self, i: int) -> int | None:
        value = int(self.source_offset[i])
        return None if value < 0 else value

    def take(self, rows) -> "TradeChunk":
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        ids = [self.trade_id_bytes[self.trade_id_offsets[i] : self.trade_id_offsets[i + 1]] for i in rows.tolist()]
        offsets = np.zeros(len(ids) + 1, dtype=np.int32)
        np.cumsum([len(x) for x in ids], out=offsets[1:])
        return TradeChunk(
            self.exchange,
            self.symbol,
            self.base,
            self.quote,
            self.window_start,
            self.event_time[rows],
            self.price[rows],
            self.amount[rows],
            self.side[rows],
            self.id_hash[rows],
            self.content_hash[rows],
            b"".join(ids),
            offsets,
            self.sources,
            self.source_index[rows],
            self.source_offset[rows],
            None if self.receive_time is None else self.receive_time[rows],
        )

    def trade_record(self, i: int) -> str:
        """The normalized trade as JSON: the payload of a dead letter raised after parsing."""
        record = {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "base": self.base,
            "quote": self.quote,
            "trade_id": self.trade_id(i),
            "price": float(self.price[i]),
            "amount": float(self.amount[i]),
            "side": SIDE_NAMES[self.side[i]],
            "event_time": micros_to_iso(int(self.event_time[i])),
            "receive_time": None
            if self.receive_time is None or self.receive_time[i] < 0
            else micros_to_iso(int(self.receive_time[i])),
        }
        return json.dumps(record, sort_keys=True)


def _segments_with_repeated_ids(id_hashes: np.ndarray, starts: np.ndarray) -> set[int]:
    """The segments (rows from ``starts[k]`` on) in which some trade id hash occurs twice. A repeat
    inside a segment is a repeat in the batch, and the batch-wide check (one column) is the cheap
    one that usually settles it."""
    ordered = np.sort(id_hashes)
    if not (ordered[1:] == ordered[:-1]).any():  # sorted neighbours: cheaper than a hashed is_duplicated here
        return set()
    rows = np.flatnonzero(pl.Series(id_hashes).is_duplicated().to_numpy())
    segments = np.searchsorted(starts, rows, side="right") - 1
    repeated = pl.DataFrame({"segment": segments, "id": id_hashes[rows]}).is_duplicated().to_numpy()
    return set(np.unique(segments[repeated]).tolist())


def chunks_of(batch: pa.Table, window_starts: np.ndarray, pair: tuple[str, str]):
    """Split a batch of one (exchange, symbol) pair's trades into one TradeChunk per window start.

    Every column is converted and every hash computed once for the whole batch; each chunk is
    then a set of array slices.
    """
    exchange, symbol = pair
    times = batch.column("event_time").cast(pa.int64()).to_numpy()
    # Usually already in time order (window starts are then sorted too): nothing to reorder or copy.
    in_order = len(times) < 2 or bool((np.diff(times) >= 0).all())
    order = np.arange(len(times)) if in_order else np.lexsort((times, window_starts))

    def ordered(values):
        return values if in_order else values[order]

    trade_ids = batch.column("trade_id")
    trade_ids = one_array(trade_ids if in_order else trade_ids.take(pa.array(order, pa.int64())))
    boundaries = np.flatnonzero(np.diff(window_starts[order]) != 0) + 1

    columns = {
        "event_time": ordered(times),
        "price": ordered(batch.column("price").to_numpy()),
        "amount": ordered(batch.column("amount").to_numpy()),
        "side": ordered(side_codes(one_array(batch.column("side")))),
    }
    columns["id_hash"], columns["content_hash"] = trade_hashes(
        trade_ids, columns["event_time"], columns["price"], columns["amount"], columns["side"]
    )
    sources, source_index = _source_codes(batch.column("source"))
    source_index = ordered(source_index)
    source_offset = ordered(pc.fill_null(batch.column("source_offset"), -1).to_numpy())
    receive = batch.column("receive_time")
    receive_time = (
        None if receive.null_count == len(receive) else ordered(pc.fill_null(receive.cast(pa.int64()), -1).to_numpy())
    )
    starts = np.r_[0, boundaries].astype(np.int64)
    ends = np.r_[boundaries, len(order)].astype(np.int64)
    first_rows = pa.array(order[starts], pa.int64())  # each chunk's base and quote: those of its first row
    bases = batch.column("base").take(first_rows).to_pylist()
    quotes = batch.column("quote").take(first_rows).to_pylist()
    chunk_window_starts = window_starts[order[starts]].tolist()
    id_bytes, id_offsets = _string_buffers(trade_ids)
    segments_with_repeats = _segments_with_repeated_ids(columns["id_hash"], starts)
    summaries = partial_bars_of_segments(
        columns["event_time"],
        columns["price"],
        columns["amount"],
        columns["side"],
        lambda i: id_bytes[id_offsets[i] : id_offsets[i + 1]].decode("utf-8"),
        starts,
        ends,
    )
    # Chunks hold views of the batch's columns, not copies: pickling packs only a view's own rows.
    for segment, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        packed = id_bytes[id_offsets[start] : id_offsets[end]]  # this chunk's ids, out of the batch's
        offsets = id_offsets[start : end + 1] - id_offsets[start]
        yield TradeChunk(
            exchange,
            symbol,
            bases[segment],
            quotes[segment],
            chunk_window_starts[segment],
            columns["event_time"][start:end],
            columns["price"][start:end],
            columns["amount"][start:end],
            columns["side"][start:end],
            columns["id_hash"][start:end],
            columns["content_hash"][start:end],
            packed,
            offsets,
            sources,
            source_index[start:end],
            source_offset[start:end],
            None if receive_time is None else receive_time[start:end],
            summaries[segment],
            segment not in segments_with_repeats,
        )
