"""The backfill pipeline: exchange files -> TradesToBars -> Parquet (and optionally Avro, BigQuery, Kafka)
bars and dead letters. Rows a sink rejects join the dead letters."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.bigquery_sink import BigQueryTarget
from io_connectors.files import InputFile
from io_connectors.sources import ReadTradeFiles, SourceFormat, parser_for
from io_connectors.time_slice import WHOLE_FILE, TimeSlice
from runners.profiles import RunnerProfile
from transforms import BarSpec, TradesToBars


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
    runner: RunnerProfile = RunnerProfile("direct")
    sinks: tuple = ("parquet",)  # Parquet is always written: manifests and validate read it
    bigquery: BigQueryTarget | None = None
    kafka_bootstrap: str | None = None
    kafka_bars_topic: str = "bars"
    time_slice: TimeSlice = WHOLE_FILE
    chunk_rows: int | None = None  # the planner's row budget per chunk; recorded so reruns plan alike

    @property
    def targets(self) -> OutputTargets:
        return OutputTargets(self.out, self.chunk_id, self.sinks, self.bigquery, self.kafka_bootstrap, self.kafka_bars_topic)


def build_backfill(pipeline: beam.Pipeline, config: BackfillConfig) -> None:
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(config.source, config.files, config.batch_rows, config.time_slice)
    results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser_for(config.source, config.exchange, config.symbol))
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(results["bars"], dead_letters, config.targets)
