"""The backfill pipeline: exchange files -> TradesToBars -> Parquet bars and dead letters, and any other
sink (``io_connectors.sinks``) the run asks for. Rows a sink rejects join the dead letters.

Files of several formats can be read in one run: each raw batch is parsed by its own file's
format's parser, and the parsed trades meet in one chain."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines.accounting import counters_of
from beam_pipelines.backfill_config import BackfillConfig
from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.source_formats import parser_for_sources
from io_connectors.sources import ReadTradeFiles
from transforms.trades_to_bars import TradesToBars


def build_backfill(pipeline: beam.Pipeline, config: BackfillConfig) -> None:
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(
        config.source, config.files, config.batch_rows, config.time_slice, config.line_limit
    )
    parser = parser_for_sources(config.sources(), config.exchange, config.symbol, config.instruments)
    results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser)
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(results["tables"], dead_letters, OutputTargets(config.out, config.chunk_id, config.sinks))


def run_pipeline(config: BackfillConfig) -> dict[str, int]:
    """Build the backfill of ``config`` (one chunk) on its runner, run it to the end and return its counters."""
    pipeline = beam.Pipeline(runner=config.runner.runner(), options=config.runner.options())
    build_backfill(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return counters_of(result)
