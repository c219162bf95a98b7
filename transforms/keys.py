"""Keys: trades are keyed by (exchange, symbol) for per-symbol state, and by (exchange, symbol,
window start) for per-window state and bars.

Keyed stages declare these types: runners encode timer keys with the key coder, and an untyped
tuple key falls back to a coder that timers cannot round-trip.
"""

from __future__ import annotations

import typing

import apache_beam as beam

from transforms.record_types import record_type as registered
from transforms.sized_coders import ArrowTableCoder, TradeChunkCoder

SymbolKey = typing.Tuple[str, str]  # (exchange, symbol)
WindowKey = typing.Tuple[str, str, int]  # (exchange, symbol, window_start_us)
BySymbol = typing.Tuple[SymbolKey, typing.Any]
ByWindow = typing.Tuple[WindowKey, typing.Any]
# Batches and chunks are typed so that they get coders that size them cheaply.
BatchBySymbol = typing.Tuple[SymbolKey, ArrowTableCoder.value_type]
WindowKeyedChunk = typing.Tuple[WindowKey, TradeChunkCoder.value_type]


class KeyRecords(beam.PTransform):
    """Record batches -> (key, batch of that key's records), e.g. ((exchange, symbol), trades)."""

    def __init__(self, record_type=None, label=None):
        super().__init__(label)
        self._record_type = record_type or registered("trade")

    def expand(self, batches):
        return batches | beam.FlatMap(self._record_type.split_by_key).with_output_types(
            self._record_type.batch_by_key_hint
        )


KeyBySymbol = KeyRecords
