"""The Beam steps of the blocks join (``transforms.block_join``): the run's blocks gathered into
one lookup table, a side input of the step that fills the transfers' block hashes and times.

Bounded runs only: the lookup is complete when every block file is read, which a backfill
reaches and a stream never does (a stream's transfers carry their block hashes)."""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.block_join import (
    BLOCK_COUNTERS,
    BLOCK_FIELDS,
    BlockLookup,
    empty_lookup,
    join_blocks,
    settle_blocks,
)
from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.dead_letter_counts import count_dead_letter
from transforms.parse import Parser, ParseTrades
from transforms.sized_coders import ArrowTableCoder
from transforms.token_transfers import transfer_dead_letters


def _without_payload(blocks: pa.Table) -> pa.Table:
    """What settling needs of a batch of blocks: a block line's bytes (its logs bloom alone is 514
    characters) would be most of the gathered table."""
    return blocks.select([*BLOCK_FIELDS, "source", "source_offset"])


class _Settle(beam.DoFn):
    def __init__(self):
        self._used = beam.metrics.Metrics.counter("cryptobeam", f"{BLOCK_COUNTERS}used")
        self._duplicates = beam.metrics.Metrics.counter("cryptobeam", f"{BLOCK_COUNTERS}duplicates")

    def process(self, batches: list[pa.Table]):
        if not batches:  # the run's block files hold no block
            self._used.inc(0)
            yield empty_lookup()
            return
        settled = settle_blocks(pa.concat_tables(batches))
        self._used.inc(settled.used)
        self._duplicates.inc(settled.duplicates)
        for reason, n in Counter(letter["reason"] for letter in settled.dead_letters).items():
            count_dead_letter("cryptobeam", reason, n)
        for letter in settled.dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        yield settled.lookup


class SettleBlocks(beam.PTransform):
    """Raw batches of block files -> {"lookup": a PCollection of one table (``LOOKUP_SCHEMA``),
    "dead_letters": ...}. Counts ``block.records_in``, ``block.used`` and ``block.duplicates``."""

    def __init__(self, parser: Parser, label=None):
        super().__init__(label)
        self._parser = parser

    def expand(self, raw_batches):
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser, counted_as=BLOCK_COUNTERS)
        settle = beam.ParDo(_Settle()).with_output_types(ArrowTableCoder.value_type)
        settled = (
            parsed.trades
            | "DropPayload" >> beam.Map(_without_payload).with_output_types(ArrowTableCoder.value_type)
            | "Gather" >> beam.combiners.ToList()
            | "Settle" >> settle.with_outputs(DEAD_LETTER_TAG, main="lookup")
        )
        dead_letters = (parsed.dead_letter, settled.dead_letter) | "DeadLetters" >> beam.Flatten()
        return {"lookup": settled.lookup, "dead_letters": dead_letters}


class _Join(beam.DoFn):
    def __init__(self):
        self._lookup: BlockLookup | None = None

    def process(self, transfers: pa.Table, lookup: pa.Table):
        if self._lookup is None or self._lookup.table is not lookup:  # prepared once per side input
            self._lookup = BlockLookup(lookup)
        joined = join_blocks(transfers, self._lookup)
        if not len(joined.rejected_rows):
            yield joined.batch
            return
        rows = joined.rejected_rows.tolist()
        times = joined.batch.column("event_time").cast(pa.int64()).take(pa.array(rows, pa.int64())).to_pylist()
        letters = transfer_dead_letters(joined.batch, rows, joined.reasons, joined.messages, "join_blocks", times)
        for reason, n in Counter(joined.reasons).items():
            count_dead_letter("cryptobeam", reason, n)
        for letter in letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        keep = np.ones(transfers.num_rows, bool)
        keep[joined.rejected_rows] = False
        if keep.any():
            yield joined.batch.take(pa.array(np.flatnonzero(keep), pa.int64()))


class JoinBlocks(beam.PTransform):
    """Parsed transfer batches -> the same with block hashes and times filled from the run's
    blocks (main output ``joined``) and ``dead_letter`` for those the blocks contradict or lack."""

    def __init__(self, lookup, label=None):
        super().__init__(label)
        self._lookup = lookup

    def expand(self, transfers):
        return transfers | beam.ParDo(_Join(), beam.pvalue.AsSingleton(self._lookup)).with_output_types(
            ArrowTableCoder.value_type
        ).with_outputs(DEAD_LETTER_TAG, main="joined")
