"""Keys: trades are keyed by (exchange, symbol) for per-symbol state, and by (exchange, symbol,
window start) for per-window state and bars.

Keyed stages declare these types: runners encode timer keys with the key coder, and an untyped
tuple key falls back to a coder that timers cannot round-trip.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_arrays import one_array, one_value
from transforms.sized_coders import ArrowTableCoder, TradeChunkCoder

SymbolKey = typing.Tuple[str, str]  # (exchange, symbol)
WindowKey = typing.Tuple[str, str, int]  # (exchange, symbol, window_start_us)
BySymbol = typing.Tuple[SymbolKey, typing.Any]
ByWindow = typing.Tuple[WindowKey, typing.Any]
# Batches and chunks are typed so that they get coders that size them cheaply.
BatchBySymbol = typing.Tuple[SymbolKey, ArrowTableCoder.value_type]
WindowKeyedChunk = typing.Tuple[WindowKey, TradeChunkCoder.value_type]


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


class KeyRecords(beam.PTransform):
    """Record batches -> (key, batch of that key's records), e.g. ((exchange, symbol), trades)."""

    def __init__(self, record_type=None, label=None):
        super().__init__(label)
        from transforms.record_types import record_type as registered

        self._record_type = record_type or registered("trade")

    def expand(self, batches):
        return batches | beam.FlatMap(self._record_type.split_by_key).with_output_types(
            self._record_type.batch_by_key_hint
        )


KeyBySymbol = KeyRecords
