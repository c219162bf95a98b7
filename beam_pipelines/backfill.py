"""The backfill pipeline: exchange files -> TradesToBars -> Parquet bars and dead letters, and any other
sink (``io_connectors.sinks``) the run asks for. Rows a sink rejects join the dead letters.

Files of several formats can be read in one run: each raw batch is parsed by its own file's
format's parser, and the parsed trades meet in one chain. Files of other records than trades
(ethereum-etl token transfers, and the blocks they are joined with) go through the same
``TradesToBars``, as its input of their type."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines.accounting import counters_of
from beam_pipelines.backfill_config import BackfillConfig
from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.raw_batch_coder import RawBatchCoder
from io_connectors.source_formats import RECORD_TYPE_INPUTS, parser_for_sources, parsers_by_input, record_type_of
from io_connectors.sources import ReadTradeFiles
from transforms.trades_to_bars import TradesToBars


def build_backfill(pipeline: beam.Pipeline, config: BackfillConfig) -> None:
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(
        config.source, config.files, config.batch_rows, config.time_slice, config.line_limit
    )
    parsers = parsers_by_input(config.sources(), config.exchange, config.symbol, config.instruments)
    if set(parsers) <= {"trades"}:  # trade files only: the steps keep the names they always had
        parser = parser_for_sources(config.sources(), config.exchange, config.symbol, config.instruments)
        results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser)
    else:
        inputs = {kind: read.raw | f"Only[{kind}]" >> _records_of_input(kind) for kind in parsers}
        results = inputs | "TradesToBars" >> TradesToBars(
            config.spec,
            parsers.get("trades"),
            transfer_parser=parsers.get("token_transfers"),
            block_parser=parsers.get("blocks"),
        )
    dead_letters = (read.dead_letter, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(results["tables"], dead_letters, OutputTargets(config.out, config.chunk_id, config.sinks))


def _records_of_input(kind: str):
    """The raw batches of files whose format gives records of that ``TradesToBars`` input."""
    return beam.Filter(lambda raw: RECORD_TYPE_INPUTS[record_type_of(raw)] == kind).with_output_types(
        RawBatchCoder.value_type
    )


def run_pipeline(config: BackfillConfig) -> dict[str, int]:
    """Build the backfill of ``config`` (one chunk) on its runner, run it to the end and return its counters."""
    pipeline = beam.Pipeline(runner=config.runner.runner(), options=config.runner.options())
    build_backfill(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return counters_of(result)
