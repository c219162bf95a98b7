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
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(config.source, config.files, config.batch_rows, config.time_slice)
    results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser_for(config.source, config.exchange, config.symbol))
    results = {**results, "bars": results["bars"] | "FinalizeBoundedBars" >> FinalizeBoundedBars()}
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(results["bars"], dead_letters, config.targets)
