"""Iceberg sink: one commit per table per bounded run (a backfill chunk, the seam fill), one per
table per flush in a stream, never one per bar. The tables and their writes are
``io_connectors.iceberg_tables``.

Every record of a commit is grouped under one key (the table's name) with the same grouping the
Parquet writers use (``parquet_sink.WritePartitions``): a bounded run's group fires once its
input is exhausted; a stream's fires every ``flush_every_s`` (processing time), and that pane
becomes one Iceberg commit.

Why a crash between two commits loses nothing: the committing DoFn emits its ``WrittenFile``
(``iceberg:<table>@<snapshot>``, ``through_us`` the latest window end it holds) only once the
commit returned, and the sink returns those records as its files, so ``beam_pipelines.outputs``
flattens them with the Parquet writers' into what ``io_connectors.kafka_progress.CommitProgress``
reads. Its offset commits are driven by the watermark downstream of that Flatten, which is the
oldest of its inputs. The grouping above holds its output watermark at the oldest record not yet
emitted (``OUTPUT_AT_EARLIEST``), and the commit runs inside the element's processing, so until
the Iceberg commit is done the watermark stays below every bar in it, no Kafka offset is
committed past their trades, and a restarted stream re-reads them. A commit that failed is retried
on a fresh table, then fails the bundle, which the runner retries: replaying a flush appends its
panes again (revision rows, as a restarted stream's), and ``bars_latest`` still returns one
row per bar (docs/iceberg.md).
"""

from __future__ import annotations

import apache_beam as beam

from io_connectors.iceberg_tables import DEAD_LETTERS, append, open_catalog, replace
from io_connectors.parquet_sink import WritePartitions, WrittenFile
from io_connectors.sinks.base import SinkWrites
from io_connectors.sinks.iceberg import IcebergTarget
from transforms.computations import TIME_BARS, OutputTable


class _CommitRows(beam.DoFn):
    """One group of records -> one Iceberg commit -> one ``WrittenFile`` naming the snapshot."""

    def __init__(self, target: IcebergTarget, table: str, schema: str, unbounded: bool):
        self._target, self._table, self._schema, self._unbounded = target, table, schema, unbounded
        self._commits = beam.metrics.Metrics.counter("cryptobeam", "iceberg_commits")
        self._rows = beam.metrics.Metrics.counter("cryptobeam", f"iceberg_rows.{table}")

    def setup(self):
        self._catalog = open_catalog(self._target)

    def process(self, element):
        _table, records = element
        records = list(records)
        if not records:  # a runner may fire an empty closing pane: nothing to commit
            return
        write = append if self._unbounded else replace
        snapshot = write(self._catalog, self._table, records, self._schema)
        self._commits.inc()
        self._rows.inc(len(records))
        through_us = max(r["window_end"] for r in records) if self._table != DEAD_LETTERS else None
        yield WrittenFile(f"iceberg:{self._table}@{snapshot}", through_us)


class _WriteTable(beam.PTransform):
    def __init__(self, target: IcebergTarget, table: str, schema: str, flush_every_s: float | None, label=None):
        super().__init__(label)
        self._target, self._table, self._schema, self._flush_every_s = target, table, schema, flush_every_s

    def expand(self, records):
        table = self._table
        committer = _CommitRows(self._target, table, self._schema, unbounded=self._flush_every_s is not None)
        return records | "OneCommit" >> WritePartitions(lambda _record: table, committer, self._flush_every_s)


def WriteBarsIceberg(
    target: IcebergTarget, table: OutputTable = TIME_BARS, flush_every_s: float | None = None
) -> beam.PTransform:
    """One table of bar panes -> ``market.<table>``; returns the commits' ``WrittenFile``s."""
    return _WriteTable(target, table.name, table.schema, flush_every_s)


def WriteDeadLettersIceberg(target: IcebergTarget, flush_every_s: float | None = None) -> beam.PTransform:
    """The run's dead letters -> ``market.dead_letters``."""
    return _WriteTable(target, DEAD_LETTERS, "dead_letter", flush_every_s)


def write_to_iceberg(bars, target: IcebergTarget) -> SinkWrites:
    """``--sink iceberg``'s writing (``io_connectors.sinks.iceberg``): one table of bars, and its
    commits with the run's dead letters' when they come with it (the run's first table)."""
    committed = [bars.bars | "WriteBarsIceberg" >> WriteBarsIceberg(target, bars.table, bars.flush_every_s)]
    if bars.dead_letters is not None:
        committed.append(
            bars.dead_letters | "WriteDeadLettersIceberg" >> WriteDeadLettersIceberg(target, bars.flush_every_s)
        )
    if len(committed) == 1:
        return SinkWrites(files=committed[0])
    return SinkWrites(files=tuple(committed) | "IcebergCommits" >> beam.Flatten())
