"""The seam fill (``beam_pipelines.seams``): the filled bars of the empty intervals between chunks,
from the chunks' Parquet bars, and the small bounded run that writes them to every sink."""

from __future__ import annotations

import glob
import os
from collections import defaultdict

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds

from beam_pipelines.accounting import Accounting, counters_of
from beam_pipelines.outputs import OutputTargets, write_outputs
from beam_pipelines.seams import SEAM_FILES, SEAM_RUN
from runners.profiles import in_process_runner
from transforms.gap_fill import filled_bar, gaps_between


def fill_seams(out: str, spec, sinks: tuple) -> Accounting:
    """Write the filled bars no chunk could write to every sink in ``sinks``, replacing the previous
    run's; returns what was written, as accounting figures."""
    for path in glob.glob(os.path.join(out, SEAM_FILES), recursive=True):
        os.remove(path)
    bars = seam_bars(out, spec)
    return write_seam_bars(bars, out, sinks) if bars else Accounting()


def seam_bars(out: str, spec) -> list[dict]:
    """The filled bars of the empty intervals that no chunk's Parquet bars (in ``out/bars``) cover."""
    bars_dir = os.path.join(out, "bars")
    if not os.path.isdir(bars_dir):
        return []
    table = ds.dataset(bars_dir, format="parquet", partitioning="hive").to_table(
        columns=["exchange", "symbol", "window_start", "close", "is_filled", "pane_index"]
    )
    closes: dict[tuple, dict[int, tuple[int, float]]] = defaultdict(dict)
    filled: dict[tuple, set[int]] = defaultdict(set)
    starts = table.column("window_start").cast(pa.int64()).to_pylist()
    for exchange, symbol, start, close, is_filled, pane in zip(
        table.column("exchange").to_pylist(),
        table.column("symbol").to_pylist(),
        starts,
        table.column("close").to_pylist(),
        table.column("is_filled").to_pylist(),
        table.column("pane_index").to_pylist(),
    ):
        key = (str(exchange), str(symbol))
        if is_filled:
            filled[key].add(start)
        elif start not in closes[key] or pane >= closes[key][start][0]:
            closes[key][start] = (pane, close)
    bars = []
    for (exchange, symbol), windows in closes.items():
        settled = {w: close for w, (_, close) in windows.items()}
        bars += [
            filled_bar(exchange, symbol, spec, start, close)
            for start, close in gaps_between(None, settled, spec.interval.micros)
            if start not in filled[(exchange, symbol)]
        ]
    return bars


def write_seam_bars(bars: list[dict], out: str, sinks: tuple) -> Accounting:
    """A small bounded pipeline, in this process, through the outputs a chunk's bars go through."""
    pipeline = beam.Pipeline(runner=in_process_runner())
    dead_letters = pipeline | "NoDeadLetters" >> beam.Create([])
    write_outputs(pipeline | "SeamBars" >> beam.Create(bars), dead_letters, OutputTargets(out, SEAM_RUN, sinks))
    result = pipeline.run()
    result.wait_until_finish()
    counted = Accounting.from_counters(counters_of(result))
    # The seam files are the run's, not a chunk's: its bar files count only chunks' files.
    return Accounting(
        bar_rows_written=counted.bar_rows_written,
        filled_bars_written=counted.filled_bars_written,
        sink_rejections=counted.sink_rejections,
        sink_dead_letters_written=counted.sink_dead_letters_written,
    )
