"""Parse: raw records (lines, rows or messages) into trade batches, malformed ones into dead letters.

The format knowledge lives in the parser function a source hands in; this transform only applies
it, counts what came in, and routes what the parser rejected.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import apache_beam as beam
import pyarrow as pa

from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.dead_letter_counts import count_dead_letter
from transforms.sized_coders import ArrowTableCoder

# A parser takes one raw batch and returns (trades, dead letters).
Parser = Callable[[object], "tuple[pa.Table, list[dict]]"]


class _ParseBatch(beam.DoFn):
    def __init__(self, parser: Parser, counted_as: str = ""):
        self._parser = parser
        self._records_in = beam.metrics.Metrics.counter("cryptobeam", f"{counted_as}records_in")
        self._parsed = beam.metrics.Metrics.counter("cryptobeam", f"{counted_as}trades_parsed")

    def process(self, raw):
        trades, dead = self._parser(raw)
        self._records_in.inc(trades.num_rows + len(dead))
        self._parsed.inc(trades.num_rows)
        for reason, n in Counter(record["reason"] for record in dead).items():
            count_dead_letter("cryptobeam", reason, n)
        for record in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)
        if trades.num_rows:
            yield trades


class ParseTrades(beam.PTransform):
    """Raw batches -> trade batches (main output) and dead letters (``dead_letter`` output).
    ``counted_as`` prefixes its counters for records other than trades (``feed_status.``), which
    the accounting reconciles on their own."""

    def __init__(self, parser: Parser, counted_as: str = "", label: str | None = None):
        super().__init__(label)
        self._parser, self._counted_as = parser, counted_as

    def expand(self, raw_batches):
        return raw_batches | beam.ParDo(_ParseBatch(self._parser, self._counted_as)).with_output_types(
            ArrowTableCoder.value_type
        ).with_outputs(DEAD_LETTER_TAG, main="trades")
