"""Where bars and dead letters go: the same sinks for a backfill and for a stream.

Parquet is always written (manifests, ``validate`` and accounting read it); Avro, BigQuery and
Kafka are optional. Rows a sink rejects join the dead letters. A bounded run writes one file per
partition; an unbounded run flushes a file per partition every ``flush_every_s``.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from io_connectors.bigquery_sink import BigQueryTarget, WriteBarsBigQuery, WriteDeadLettersBigQuery
from io_connectors.kafka_sink import WriteBarsKafka
from io_connectors.parquet_sink import WriteBarsAvro, WriteBarsParquet, WriteDeadLettersParquet, file_name_for


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


def write_outputs(bars, dead_letters, targets: OutputTargets):
    """Writes both; returns the Parquet files written (``WrittenFile``s) as they appear."""
    unbounded = targets.flush_every_s is not None
    written = bars | "WriteBars" >> WriteBarsParquet(
        targets.out, file_name_for(targets.run, "parquet", unbounded), targets.flush_every_s)
    files = []
    if "avro" in targets.sinks:
        files.append(bars | "WriteBarsAvro" >> WriteBarsAvro(targets.out, file_name_for(targets.run, "avro", unbounded),
                                                             targets.flush_every_s))
    if targets.bigquery is not None:
        sent = bars | "WriteBarsBigQuery" >> WriteBarsBigQuery(targets.bigquery)
        dead_sent = dead_letters | "WriteDeadLettersBigQuery" >> WriteDeadLettersBigQuery(targets.bigquery)
        dead_letters = (dead_letters, sent.dead_letter, dead_sent.dead_letter) | "WithSinkRejections" >> beam.Flatten()
    if targets.kafka_bootstrap:
        sent = bars | "WriteBarsKafka" >> WriteBarsKafka(targets.kafka_bootstrap, targets.kafka_bars_topic)
        dead_letters = (dead_letters, sent.dead_letter) | "WithKafkaRejections" >> beam.Flatten()
    dead_written = dead_letters | "WriteDeadLetters" >> WriteDeadLettersParquet(
        targets.out, file_name_for(targets.run, "parquet", unbounded), targets.flush_every_s)
    return (written, *files, dead_written) | "FilesWritten" >> beam.Flatten()
