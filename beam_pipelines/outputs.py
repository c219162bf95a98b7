"""Where bars and dead letters go: the same sinks for a backfill and for a stream.

The sinks come from the registry (``io_connectors.sinks``): Parquet always (manifests,
``validate`` and accounting read it), others as the run asks. Every table of bars the run
computes (``transforms.computations``: ``bars`` for time bars, ``bars_ticks`` and the like) goes
to every sink, each into its own directory, table or topic. Rows a sink rejects join the dead
letters, which go to Parquet. A bounded run writes one file per partition; an unbounded run
flushes a file per partition every ``flush_every_s``.

A bounded run groups each table's bars once, by file partition, when its input is exhausted: no
pane can follow then, so the newest pane of each bar is marked final there, and every sink is
fed from that one grouping. An unbounded run's bars are final when their computation says their
last pane fired. Bars are counted for the accounting here, where they are finalized, before any
sink sees them, so every sink writes the bars counted. The accounting counts trades in the
run's first table only (time bars when there are any): each table's final bars hold every
unique trade once.
"""

from __future__ import annotations

import bisect
import functools
import time
from dataclasses import dataclass

import apache_beam as beam

from io_connectors.bar_tables import file_name_for
from io_connectors.metric_results import (
    PANE_LATENCY_BUCKETS_S,
    PANE_LATENCY_SUM_MS,
    WATERMARK_PASSED_US,
    pane_latency_counter,
)
from io_connectors.parquet_sink import WriteDeadLettersParquet, bar_partition
from io_connectors.sinks import PARQUET_ONLY, SINKS, SinkTarget
from transforms.bars import newest_pane_final
from transforms.computations import TIME_BARS, OutputTable, counted_table, table_named


@dataclass(frozen=True)
class OutputTargets:
    out: str
    run: str
    """Names the files: a backfill chunk's id, or a stream run's start time."""
    sinks: tuple[SinkTarget, ...] = PARQUET_ONLY
    flush_every_s: float | None = None
    """None for a bounded run."""


class _CountBars(beam.DoFn):
    """Counts one table's bars, passing them on: its rows (``table_rows.<table>``) and the trades
    its final bars hold (``table_trades.<table>``) and, for the table the accounting reads
    (``counts_trades``), every bar (pane) written, filled ones, and the trades and duplicates
    that final bars hold. Elements are lists of bars (a bounded run's
    partitions) or, with ``one_bar``, single bars (a stream's)."""

    def __init__(self, table: OutputTable, counts_trades: bool, one_bar: bool = False):
        self._counts_trades, self._one_bar = counts_trades, one_bar
        self._holds_trades = table.record_type == "trade"
        self._table_rows = beam.metrics.Metrics.counter("cryptobeam", f"table_rows.{table.name}")
        self._table_trades = beam.metrics.Metrics.counter("cryptobeam", f"table_trades.{table.name}")
        # Another record type's tables count its records with fields of their own (transfers in
        # token activity, and the transfers retractions withdrew).
        self._final_counters = [
            (field_name, beam.metrics.Metrics.counter("cryptobeam", counter))
            for field_name, counter in table.final_counters
        ]
        self._rows = beam.metrics.Metrics.counter("cryptobeam", "bar_rows_written")
        self._filled = beam.metrics.Metrics.counter("cryptobeam", "filled_bars_written")
        self._final_trades = beam.metrics.Metrics.counter("cryptobeam", "trades_in_final_bars")
        self._final_duplicates = beam.metrics.Metrics.counter("cryptobeam", "duplicates_in_final_bars")
        if one_bar:
            self._latency = _PaneLatency(table.name)

    def process(self, element):
        if self._one_bar:
            self._count([element])
            self._latency.observe(element)
        else:
            self._count(element[1])
        yield element

    def _count(self, bars: list[dict]) -> None:
        self._table_rows.inc(len(bars))
        for field_name, counter in self._final_counters:
            total = sum(bar[field_name] for bar in bars if bar["is_final"])
            if total:
                counter.inc(total)
        if not self._holds_trades:
            return
        filled = trades = duplicates = 0
        for bar in bars:
            if bar.get("is_filled"):  # only time bars are ever filled, and only they have the field
                filled += 1
            elif bar["is_final"]:
                trades += bar["trade_count"]
                duplicates += bar["duplicate_count"]
        if trades:
            self._table_trades.inc(trades)
        if not self._counts_trades:
            return
        self._rows.inc(len(bars))
        for counter, value in (
            (self._filled, filled),
            (self._final_trades, trades),
            (self._final_duplicates, duplicates),
        ):
            if value:
                counter.inc(value)


class _PaneLatency:
    """A stream's written panes for its metrics endpoint (``io_connectors.prometheus_metrics``):
    each pane's wall-clock time minus its window end, counted into fixed buckets (Beam has no
    histogram metric; an early pane, written before its window ends, counts as 0), and, for
    time bars, the newest window end whose on-time or late pane was written: the watermark has
    passed it, so it bounds the watermark from below. Streams only: a bounded run writes its
    bars when its input is over, so their latency says nothing, and its hot path stays as it is."""

    WATERMARK_PASSED = ("ON_TIME", "LATE")

    def __init__(self, table: str):
        self._bounds_us = [bound * 1_000_000 for bound in PANE_LATENCY_BUCKETS_S]
        self._buckets = [
            beam.metrics.Metrics.counter("cryptobeam", pane_latency_counter(table, bound))
            for bound in (*PANE_LATENCY_BUCKETS_S, None)
        ]
        self._sum_ms = beam.metrics.Metrics.counter("cryptobeam", f"{PANE_LATENCY_SUM_MS}{table}")
        self._watermark = (
            beam.metrics.Metrics.distribution("cryptobeam", WATERMARK_PASSED_US) if table == TIME_BARS.name else None
        )

    def observe(self, bar: dict) -> None:
        latency_us = max(0, time.time_ns() // 1000 - bar["window_end"])
        self._buckets[bisect.bisect_left(self._bounds_us, latency_us)].inc()
        self._sum_ms.inc(latency_us // 1000)
        if self._watermark is not None and bar["pane_timing"] in self.WATERMARK_PASSED and not bar.get("is_filled"):
            self._watermark.update(bar["window_end"])


class FinalizeBoundedBars(beam.PTransform):
    """Bars of a bounded run -> ((exchange, symbol, date), that partition's bars, the newest pane of
    each marked final). The grouping fires once the input is exhausted, on every runner,
    whether or not the runner flagged a last pane itself. A bar's panes share its first
    moment, so its partition; ``identity`` names a bar across its panes."""

    def __init__(self, identity: tuple[str, ...] = TIME_BARS.identity, label=None):
        super().__init__(label)
        self._identity = identity

    def expand(self, bars):
        identity = self._identity
        return (
            bars
            | "KeyByPartition" >> beam.Map(lambda bar: (bar_partition(bar), bar))
            | "AllPanesOfPartition" >> beam.GroupByKey()
            | "MarkNewestPaneFinal"
            >> beam.MapTuple(lambda partition, panes: (partition, newest_pane_final(list(panes), identity)))
        )


class BarsToWrite:
    """What every sink is given: one table of a run's bars, in the shape it wants, and where its files go."""

    def __init__(self, targets: OutputTargets, table: OutputTable, dead_letters, partitions=None, bars=None):
        self.out, self.run, self.flush_every_s = targets.out, targets.run, targets.flush_every_s
        self.table = table
        self.dead_letters = dead_letters
        """The run's own dead letters (for a sink that stores them too), without sink rejections;
        given with the run's first table only (None with the others), so they are stored once."""
        self.partitions = partitions
        """A bounded run's ((exchange, symbol, date), bars) groups, finalized; None for a stream."""
        self._bars = bars

    @property
    def unbounded(self) -> bool:
        return self.flush_every_s is not None

    @functools.cached_property
    def bars(self):
        """Every bar pane, the final ones marked: a bounded run's are taken out of its partitions
        (only if a sink asks for them)."""
        if self._bars is not None:
            return self._bars
        return self.partitions | "FinalBars" >> beam.FlatMapTuple(lambda _partition, final: final)


class _WriteTable(beam.PTransform):
    """One table's bars to every sink (finalized first in a bounded run); returns the files
    written and the rows sinks rejected, as (files PCollections, rejected PCollections)."""

    def __init__(self, table: OutputTable, targets: OutputTargets, dead_letters, counts_trades: bool, label=None):
        super().__init__(label)
        self._table, self._targets, self._dead_letters = table, targets, dead_letters
        self._counts_trades = counts_trades
        self.written = ([], [])

    def expand(self, bars):
        table, targets = self._table, self._targets
        if targets.flush_every_s is None:
            partitions = (
                bars
                | "FinalizeBoundedBars" >> FinalizeBoundedBars(table.identity)
                | "CountFinalizedBars" >> beam.ParDo(_CountBars(table, self._counts_trades))
            )
            to_write = BarsToWrite(targets, table, self._dead_letters, partitions=partitions)
        else:
            counted = bars | "CountBars" >> beam.ParDo(_CountBars(table, self._counts_trades, one_bar=True))
            to_write = BarsToWrite(targets, table, self._dead_letters, bars=counted)
        files, rejected = self.written
        for sink, target in targets.sinks:
            written = SINKS[sink].write(to_write, target)
            files += [written.files] if written.files is not None else []
            rejected += written.rejected
        return (*files, *rejected)


def write_outputs(tables, dead_letters, targets: OutputTargets):
    """Writes every table of bars (``{table name: bars}``, in the run's order, or one PCollection
    of time bars) and the dead letters; returns the files written (``WrittenFile``s) as they appear."""
    if not isinstance(tables, dict):
        tables = {TIME_BARS.name: tables}
    files, rejected = [], []
    counted = counted_table(tables)
    for position, (name, bars) in enumerate(tables.items()):
        first = position == 0
        writer = _WriteTable(table_named(name), targets, dead_letters if first else None, counts_trades=name == counted)
        # The time bars' steps keep the names they have always had (runners' update checks and
        # Dataflow plans key on them); another table's steps are scoped under its name.
        if name == TIME_BARS.name:
            writer.expand(bars)
        else:
            _ = bars | f"Write[{name}]" >> writer
        files += writer.written[0]
        rejected += writer.written[1]
    if rejected:
        dead_letters = (dead_letters, *rejected) | "WithSinkRejections" >> beam.Flatten()
    dead_letter_file = file_name_for(targets.run, "parquet", targets.flush_every_s is not None)
    dead_written = dead_letters | "WriteDeadLetters" >> WriteDeadLettersParquet(
        targets.out, dead_letter_file, targets.flush_every_s
    )
    return (*files, dead_written) | "FilesWritten" >> beam.Flatten()
