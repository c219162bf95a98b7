"""Where bars and dead letters go: the same sinks for a backfill and for a stream.

Parquet is always written (manifests, ``validate`` and accounting read it); Avro, BigQuery and
Kafka are optional. Rows a sink rejects join the dead letters. A bounded run writes one file per
partition; an unbounded run flushes a file per partition every ``flush_every_s``.

A bounded run groups its bars once, by file partition, when its input is exhausted: no pane can
follow then, so the newest pane of each bar is marked final there, and every sink is fed from
that one grouping. An unbounded run's bars are final when the runner says their last pane fired.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from io_connectors.bigquery_sink import BigQueryTarget, WriteBarsBigQuery, WriteDeadLettersBigQuery
from io_connectors.kafka_sink import WriteBarsKafka
from io_connectors.parquet_sink import (WriteBarPartitions, WriteBarsAvro, WriteBarsParquet, WriteDeadLettersParquet,
                                        bar_partition, file_name_for)
from transforms.bars import newest_pane_final


@dataclass(frozen=True)
class OutputTargets:
    out: str
    run: str
    """Names the files: a backfill chunk's id, or a stream run's start time."""
    sinks: tuple = ("parquet",)
    bigquery: BigQueryTarget | None = None
    kafka_bootstrap: str | None = None
    kafka_bars_topic: str = "bars"
    flush_every_s: float | None = None
    """None for a bounded run."""


class FinalizeBoundedBars(beam.PTransform):
    """Bars of a bounded run -> ((exchange, symbol, date), that partition's bars, the newest pane of
    each marked final). The grouping fires once the input is exhausted, on every runner, whether
    or not the runner flagged a last pane itself. A bar's panes share its window, so its partition."""

    def expand(self, bars):
        return (bars
                | "KeyByPartition" >> beam.Map(lambda bar: (bar_partition(bar), bar))
                | "AllPanesOfPartition" >> beam.GroupByKey()
                | "MarkNewestPaneFinal" >> beam.MapTuple(lambda partition, panes: (partition, newest_pane_final(list(panes)))))


def write_outputs(bars, dead_letters, targets: OutputTargets):
    """Writes both; returns the Parquet files written (``WrittenFile``s) as they appear."""
    unbounded = targets.flush_every_s is not None
    parquet_name, avro_name = (file_name_for(targets.run, extension, unbounded) for extension in ("parquet", "avro"))
    files = []
    if unbounded:
        written = bars | "WriteBars" >> WriteBarsParquet(targets.out, parquet_name, targets.flush_every_s)
        if "avro" in targets.sinks:
            files.append(bars | "WriteBarsAvro" >> WriteBarsAvro(targets.out, avro_name, targets.flush_every_s))
    else:
        partitions = bars | "FinalizeBoundedBars" >> FinalizeBoundedBars()
        written = partitions | "WriteBars" >> WriteBarPartitions(targets.out, parquet_name)
        if "avro" in targets.sinks:
            files.append(partitions | "WriteBarsAvro" >> WriteBarPartitions(targets.out, avro_name, "avro", counts=False))
        if targets.bigquery is not None or targets.kafka_bootstrap:
            bars = partitions | "FinalBars" >> beam.FlatMapTuple(lambda _partition, final: final)
    if targets.bigquery is not None:
        sent = bars | "WriteBarsBigQuery" >> WriteBarsBigQuery(targets.bigquery)
        dead_sent = dead_letters | "WriteDeadLettersBigQuery" >> WriteDeadLettersBigQuery(targets.bigquery)
        dead_letters = (dead_letters, sent.dead_letter, dead_sent.dead_letter) | "WithSinkRejections" >> beam.Flatten()
    if targets.kafka_bootstrap:
        sent = bars | "WriteBarsKafka" >> WriteBarsKafka(targets.kafka_bootstrap, targets.kafka_bars_topic)
        dead_letters = (dead_letters, sent.dead_letter) | "WithKafkaRejections" >> beam.Flatten()
    dead_written = dead_letters | "WriteDeadLetters" >> WriteDeadLettersParquet(targets.out, parquet_name, targets.flush_every_s)
    return (written, *files, dead_written) | "FilesWritten" >> beam.Flatten()
