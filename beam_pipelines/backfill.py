"""The backfill pipeline: exchange files -> TradesToBars -> Parquet bars and dead letters, and any other
sink (``io_connectors.sinks``) the run asks for. Rows a sink rejects join the dead letters."""
from __future__ import annotations

import apache_beam as beam

from beam_pipelines.backfill_config import BackfillConfig
from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.source_formats import parser_for
from io_connectors.sources import ReadTradeFiles
from transforms import TradesToBars


def build_backfill(pipeline: beam.Pipeline, config: BackfillConfig) -> None:
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(config.source, config.files, config.batch_rows,
                                                         config.time_slice, config.line_limit)
    results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser_for(config.source, config.exchange, config.symbol,
                                                                                   config.instruments))
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(results["bars"], dead_letters, OutputTargets(config.out, config.chunk_id, config.sinks))
