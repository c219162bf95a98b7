"""Where bars and dead letters go: the same sinks for a backfill and for a stream.

The sinks come from the registry (``io_connectors.sinks``): Parquet always (manifests,
``validate`` and accounting read it), others as the run asks. Rows a sink rejects join the dead
letters, which go to Parquet. A bounded run writes one file per partition; an unbounded run
flushes a file per partition every ``flush_every_s``.

A bounded run groups its bars once, by file partition, when its input is exhausted: no pane can
follow then, so the newest pane of each bar is marked final there, and every sink is fed from
that one grouping. An unbounded run's bars are final when the runner says their last pane fired.
Bars are counted for the accounting here, where they are finalized, before any sink sees them,
so every sink writes the bars counted.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import apache_beam as beam

from io_connectors.parquet_sink import WriteDeadLettersParquet, bar_partition, file_name_for
from io_connectors.sinks import PARQUET_ONLY, SINKS, SinkTarget
from transforms.bars import newest_pane_final


@dataclass(frozen=True)
class OutputTargets:
    out: str
    run: str
    """Names the files: a backfill chunk's id, or a stream run's start time."""
    sinks: tuple[SinkTarget, ...] = PARQUET_ONLY
    flush_every_s: float | None = None
    """None for a bounded run."""


class _CountBars(beam.DoFn):
    """Counts bars for the run's accounting, passing them on: every bar (pane) written, filled ones,
    and the trades and duplicates that final bars hold. Elements are lists of bars (a bounded
    run's partitions) or, with ``one_bar``, single bars (a stream's)."""

    def __init__(self, one_bar: bool = False):
        self._one_bar = one_bar
        self._rows = beam.metrics.Metrics.counter("cryptobeam", "bar_rows_written")
        self._filled = beam.metrics.Metrics.counter("cryptobeam", "filled_bars_written")
        self._final_trades = beam.metrics.Metrics.counter("cryptobeam", "trades_in_final_bars")
        self._final_duplicates = beam.metrics.Metrics.counter("cryptobeam", "duplicates_in_final_bars")

    def process(self, element):
        self._count([element] if self._one_bar else element[1])
        yield element

    def _count(self, bars: list[dict]) -> None:
        self._rows.inc(len(bars))
        filled = trades = duplicates = 0
        for bar in bars:
            if bar["is_filled"]:
                filled += 1
            elif bar["is_final"]:
                trades += bar["trade_count"]
                duplicates += bar["duplicate_count"]
        for counter, value in ((self._filled, filled), (self._final_trades, trades), (self._final_duplicates, duplicates)):
            if value:
                counter.inc(value)


class FinalizeBoundedBars(beam.PTransform):
    """Bars of a bounded run -> ((exchange, symbol, date), that partition's bars, the newest pane of
    each marked final). The grouping fires once the input is exhausted, on every runner,
    whether or not the runner flagged a last pane itself. A bar's panes share its window, so its partition."""

    def expand(self, bars):
        return (bars
                | "KeyByPartition" >> beam.Map(lambda bar: (bar_partition(bar), bar))
                | "AllPanesOfPartition" >> beam.GroupByKey()
                | "MarkNewestPaneFinal" >> beam.MapTuple(lambda partition, panes: (partition, newest_pane_final(list(panes)))))


class BarsToWrite:
    """What every sink is given: a run's bars, in the shape it wants, and where its files go."""

    def __init__(self, targets: OutputTargets, dead_letters, partitions=None, bars=None):
        self.out, self.run, self.flush_every_s = targets.out, targets.run, targets.flush_every_s
        self.dead_letters = dead_letters
        """The run's own dead letters (for a sink that stores them too), without sink rejections."""
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


def write_outputs(bars, dead_letters, targets: OutputTargets):
    """Writes both; returns the files written (``WrittenFile``s) as they appear."""
    if targets.flush_every_s is None:
        partitions = (bars | "FinalizeBoundedBars" >> FinalizeBoundedBars()
                      | "CountFinalizedBars" >> beam.ParDo(_CountBars()))
        to_write = BarsToWrite(targets, dead_letters, partitions=partitions)
    else:
        to_write = BarsToWrite(targets, dead_letters, bars=bars | "CountBars" >> beam.ParDo(_CountBars(one_bar=True)))
    files, rejected = [], []
    for sink, target in targets.sinks:
        written = SINKS[sink].write(to_write, target)
        files += [written.files] if written.files is not None else []
        rejected += written.rejected
    if rejected:
        dead_letters = (dead_letters, *rejected) | "WithSinkRejections" >> beam.Flatten()
    dead_letter_file = file_name_for(targets.run, "parquet", to_write.unbounded)
    dead_written = dead_letters | "WriteDeadLetters" >> WriteDeadLettersParquet(targets.out, dead_letter_file,
                                                                                targets.flush_every_s)
    return (*files, dead_written) | "FilesWritten" >> beam.Flatten()
