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
        from transforms.sized_coders import ArrowTableCoder

        return typing.Tuple[self.key_hint, ArrowTableCoder.value_type]

    @property
    def chunk_by_window_hint(self):
        return typing.Tuple[self.window_key_hint, self.chunk_type]


def _trade() -> RecordType:
    from transforms.keys import split_by_symbol
    from transforms.trade_batch import rows_dead_letters
    from transforms.trade_chunk import TradeChunk, chunks_of
    from transforms.validate_records import invalid_rows, rejected_trade_dead_letters

    return RecordType(
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


def _feed_status() -> RecordType:
    from transforms import feed_status as rules
    from transforms.keys import split_by_symbol

    return RecordType(
        "feed_status",
        "event_time",
        ("exchange", "symbol"),
        "collector",
        rules.invalid_status_rows,
        rules.rejected_status_dead_letters,
        split_by_symbol,
        rules.status_chunks_of,
        rules.FeedStatusChunk,
        rules.status_dead_letters,
    )


_FACTORIES = {"trade": _trade, "feed_status": _feed_status}


def record_type(name: str) -> RecordType:
    """The registered record type (built on first use: its rules import numpy and pyarrow)."""
    if name not in _FACTORIES:
        raise KeyError(f"unknown record type {name!r}; known: {', '.join(_FACTORIES)}")
    return _FACTORIES[name]()
