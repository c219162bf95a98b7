"""Coders for the large values that travel between stages: trade batches and window chunks.

Beam measures the mean element size of every PCollection by encoding sampled elements, and it
samples the first ten of each. With Beam's fallback coder that means pickling a whole batch
(tens of megabytes) only to take its length, a large share of a backfill chunk's CPU. These
coders encode exactly as that fallback does, with pickle, but give the size from the value's own
byte count, which costs nothing.
"""

from __future__ import annotations

import pickle

import apache_beam as beam
import pyarrow as pa

from transforms.trade_chunk import TradeChunk


class SizedPickleCoder(beam.coders.Coder):
    """Pickle encoding; the size estimate is ``nbytes`` of the value (subclasses name the type)."""

    value_type: type = object

    def encode(self, value) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes):
        return pickle.loads(encoded)

    def estimate_size(self, value) -> int:
        return int(value.nbytes)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return self.value_type

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class ArrowTableCoder(SizedPickleCoder):
    value_type = pa.Table


class TradeChunkCoder(SizedPickleCoder):
    value_type = TradeChunk


def register(coder_class: type[SizedPickleCoder]) -> None:
    """Every PCollection typed as ``coder_class.value_type`` (alone or inside a tuple) uses it."""
    beam.coders.registry.register_coder(coder_class.value_type, coder_class)


register(ArrowTableCoder)
register(TradeChunkCoder)
