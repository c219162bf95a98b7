"""The backfill pipeline: exchange files -> TradesToBars -> Parquet (and optionally Avro, BigQuery, Kafka)
bars and dead letters. Rows a sink rejects join the dead letters."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from io_connectors.bigquery_sink import BigQueryTarget, WriteBarsBigQuery, WriteDeadLettersBigQuery
from io_connectors.files import InputFile
from io_connectors.kafka_sink import WriteBarsKafka
from io_connectors.parquet_sink import WriteBarsAvro, WriteBarsParquet, WriteDeadLettersParquet
from io_connectors.sources import ReadTradeFiles, SourceFormat, parser_for
from transforms import BarSpec, TradesToBars
from transforms.bars import newest_pane_final


@dataclass(frozen=True)
class BackfillConfig:
    source: SourceFormat
    files: list[InputFile]
    spec: BarSpec
    out: str
    exchange: str | None = None
    symbol: str | None = None
    batch_rows: int = 250_000
    chunk_id: str = "all"
    runner: str = "direct"
    sinks: tuple = ("parquet",)  # Parquet is always written: manifests and validate read it
    bigquery: BigQueryTarget | None = None
    kafka_bootstrap: str | None = None
    kafka_bars_topic: str = "bars"

    @property
    def output_file_name(self) -> str:
        return f"part-{self.chunk_id}.parquet"


class FinalizeBoundedBars(beam.PTransform):
    """A backfill's input is bounded: once it is exhausted no pane can follow, so the newest pane
    of each bar is final. Grouping per symbol in the global window fires exactly then, on every
    runner, whether or not the runner flagged a last pane itself; every sink gets the same bars."""

    def expand(self, bars):
        return (bars
                | "KeyBySymbol" >> beam.Map(lambda bar: ((bar["exchange"], bar["symbol"], bar["interval"]), bar))
                | "AllPanesOfSymbol" >> beam.GroupByKey()
                | "MarkNewestPaneFinal" >> beam.FlatMap(lambda kv: newest_pane_final(list(kv[1]))))


def build_backfill(pipeline: beam.Pipeline, config: BackfillConfig) -> None:
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(config.source, config.files, config.batch_rows)
    results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser_for(config.source, config.exchange, config.symbol))
    results = {**results, "bars": results["bars"] | "FinalizeBoundedBars" >> FinalizeBoundedBars()}
    results["bars"] | "WriteBars" >> WriteBarsParquet(config.out, config.output_file_name)
    if "avro" in config.sinks:
        results["bars"] | "WriteBarsAvro" >> WriteBarsAvro(config.out, f"part-{config.chunk_id}.avro")
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    if config.bigquery is not None:
        written = results["bars"] | "WriteBarsBigQuery" >> WriteBarsBigQuery(config.bigquery)
        dead_written = dead_letters | "WriteDeadLettersBigQuery" >> WriteDeadLettersBigQuery(config.bigquery)
        dead_letters = ((dead_letters, written.dead_letter, dead_written.dead_letter)
                        | "WithSinkRejections" >> beam.Flatten())
    if config.kafka_bootstrap:
        sent = results["bars"] | "WriteBarsKafka" >> WriteBarsKafka(config.kafka_bootstrap, config.kafka_bars_topic)
        dead_letters = (dead_letters, sent.dead_letter) | "WithKafkaRejections" >> beam.Flatten()
    dead_letters | "WriteDeadLetters" >> WriteDeadLettersParquet(config.out, config.output_file_name)
