"""Record types: what the event-time skeleton needs to know of one kind of record, in one place.

The skeleton (``transforms.event_time_skeleton``) runs Validate -> Key -> route too-late ->
Window -> Dedupe for any record type; a record type says what those steps mean for it. A new
record type is one module with its rules (its schema in ``schemas/``, its validation, its
chunking) and one line in ``RECORD_TYPES``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import feed_status, token_transfers
from transforms.arrow_arrays import one_array, one_value
from transforms.sized_coders import ArrowTableCoder
from transforms.trade_batch import rows_dead_letters
from transforms.trade_chunk import TradeChunk, chunks_of
from transforms.validate_records import invalid_rows, rejected_trade_dead_letters


@dataclass(frozen=True)
class RecordType:
    name: str
    """Its schema, ``schemas/<name>.avsc``."""
    event_time_field: str
    key_fields: tuple[str, ...]
    """What per-key state (lateness, dedupe, bars) is kept by, e.g. (exchange, symbol)."""
    identity_field: str
    """Dedupe identity within a key: two records with the same value are copies of one."""
    invalid_rows: Callable
    """(batch, min_time_us, max_time_us) -> ``FirstReasons``: the validation rules."""
    rejected_dead_letters: Callable
    """(batch, [(row, reason)]) -> dead letters with the original payloads."""
    split_by_key: Callable
    """batch -> (key, that key's rows) pairs."""
    chunks_of: Callable
    """(one key's batch, window starts, key) -> chunks with ``window_start``, ``id_hash`` and
    ``content_hash`` per row (what dedupe compares), and ``summary`` when known in bulk."""
    chunk_type: type
    """The chunks' class, so that keyed stages get its registered coder."""
    rows_dead_letters: Callable
    """(batch, rows, reasons, messages, stage, event times) -> dead letters of those rows, each
    with its payload and where it came from (the skeleton's later steps reject rows too)."""

    @property
    def key_hint(self):
        """Keyed stages declare their key types: runners encode timer keys with the key coder."""
        return typing.Tuple[tuple(str for _ in self.key_fields)]

    @property
    def window_key_hint(self):
        return typing.Tuple[(*(str for _ in self.key_fields), int)]

    @property
    def batch_by_key_hint(self):
        return typing.Tuple[self.key_hint, ArrowTableCoder.value_type]

    @property
    def chunk_by_window_hint(self):
        return typing.Tuple[self.window_key_hint, self.chunk_type]


def split_by_symbol(batch: pa.Table):
    """Yield ((exchange, symbol), rows of the batch for that pair). Exchange and symbol are never
    null here (validation rejected such rows)."""
    if not batch.num_rows:
        return
    exchange, symbol = batch.column("exchange"), batch.column("symbol")
    one_exchange = one_value(exchange)
    if one_exchange and one_value(symbol):  # the usual batch: one pair, nothing to split
        yield (exchange[0].as_py(), symbol[0].as_py()), batch
        return
    pairs = symbol if one_exchange else pc.binary_join_element_wise(exchange, symbol, "\x1f")
    codes = one_array(pc.dictionary_encode(pairs)).indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    boundaries = np.flatnonzero(np.diff(codes[order]) != 0) + 1
    for rows in np.split(order, boundaries):
        first = int(rows[0])
        yield (exchange[first].as_py(), symbol[first].as_py()), batch.take(pa.array(rows, pa.int64()))


TRADE = RecordType(
    "trade",
    "event_time",
    ("exchange", "symbol"),
    "trade_id",
    invalid_rows,
    rejected_trade_dead_letters,
    split_by_symbol,
    chunks_of,
    TradeChunk,
    rows_dead_letters,
)

FEED_STATUS = RecordType(
    "feed_status",
    "event_time",
    ("exchange", "symbol"),
    "collector",
    feed_status.invalid_status_rows,
    feed_status.rejected_status_dead_letters,
    split_by_symbol,
    feed_status.status_chunks_of,
    feed_status.FeedStatusChunk,
    feed_status.status_dead_letters,
)

TOKEN_TRANSFER = RecordType(
    "token_transfer",
    "event_time",
    ("chain", "token_standard"),
    "transfer_id",
    token_transfers.invalid_transfer_rows,
    token_transfers.rejected_transfer_dead_letters,
    token_transfers.split_by_chain,
    token_transfers.transfer_chunks_of,
    token_transfers.TokenTransferChunk,
    token_transfers.transfer_dead_letters,
)

RECORD_TYPES = {t.name: t for t in (TRADE, FEED_STATUS, TOKEN_TRANSFER)}


def record_type(name: str) -> RecordType:
    """The registered record type of that name."""
    if name not in RECORD_TYPES:
        raise KeyError(f"unknown record type {name!r}; known: {', '.join(RECORD_TYPES)}")
    return RECORD_TYPES[name]
