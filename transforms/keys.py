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

SymbolKey = typing.Tuple[str, str]  # (exchange, symbol)
WindowKey = typing.Tuple[str, str, int]  # (exchange, symbol, window_start_us)
BySymbol = typing.Tuple[SymbolKey, typing.Any]
ByWindow = typing.Tuple[WindowKey, typing.Any]


def split_by_symbol(batch: pa.Table):
    """Yield ((exchange, symbol), rows of the batch for that pair)."""
    joined = pc.binary_join_element_wise(batch.column("exchange"), batch.column("symbol"), "\x1f")
    encoded = pc.dictionary_encode(joined).combine_chunks()
    pairs = encoded.dictionary.to_pylist()
    if len(pairs) == 1:
        yield tuple(pairs[0].split("\x1f", 1)), batch
        return
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    boundaries = np.flatnonzero(np.diff(codes[order]) != 0) + 1
    for rows in np.split(order, boundaries):
        yield tuple(pairs[codes[rows[0]]].split("\x1f", 1)), batch.take(pa.array(rows, pa.int64()))


class KeyBySymbol(beam.PTransform):
    """Trade batches -> ((exchange, symbol), batch of that pair's trades)."""

    def expand(self, batches):
        return batches | beam.FlatMap(split_by_symbol).with_output_types(BySymbol)
