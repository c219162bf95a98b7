"""Gap fill across chunk boundaries.

Each chunk fills the gaps it can see. An empty interval between the last bar of one chunk and
the first bar of the next is filled here, after the chunks, with the same functions the
streaming-capable FillGaps transform uses, into ``part-seams.parquet`` files that every run
rewrites.
"""
from __future__ import annotations

import glob
import os
from collections import defaultdict

import pyarrow as pa
import pyarrow.dataset as ds

from beam_pipelines.manifest import SEAM_FILE
from io_connectors.atomic_files import write_atomically
from io_connectors.parquet_sink import bar_partition, bars_parquet_bytes, partition_segment
from transforms.bar_spec import BarSpec
from transforms.gap_fill import filled_bar, gaps_between



def fill_seams(out: str, spec: BarSpec) -> int:
    """Write the filled bars no chunk could write; returns how many."""
    for path in glob.glob(os.path.join(out, "bars", "**", SEAM_FILE), recursive=True):
        os.remove(path)
    bars_dir = os.path.join(out, "bars")
    if not os.path.isdir(bars_dir):
        return 0
    table = ds.dataset(bars_dir, format="parquet", partitioning="hive").to_table(
        columns=["exchange", "symbol", "window_start", "close", "is_filled", "pane_index"])
    closes: dict[tuple, dict[int, tuple[int, float]]] = defaultdict(dict)
    filled: dict[tuple, set[int]] = defaultdict(set)
    starts = table.column("window_start").cast(pa.int64()).to_pylist()
    for exchange, symbol, start, close, is_filled, pane in zip(
            table.column("exchange").to_pylist(), table.column("symbol").to_pylist(), starts,
            table.column("close").to_pylist(), table.column("is_filled").to_pylist(), table.column("pane_index").to_pylist()):
        key = (str(exchange), str(symbol))
        if is_filled:
            filled[key].add(start)
        elif start not in closes[key] or pane >= closes[key][start][0]:
            closes[key][start] = (pane, close)
    by_partition: dict[tuple, list[dict]] = defaultdict(list)
    for (exchange, symbol), windows in closes.items():
        settled = {w: close for w, (_, close) in windows.items()}
        for start, close in gaps_between(None, settled, spec.interval.micros):
            if start not in filled[(exchange, symbol)]:
                bar = filled_bar(exchange, symbol, spec, start, close)
                by_partition[bar_partition(bar)].append(bar)
    for (exchange, symbol, day), bars in by_partition.items():
        path = os.path.join(out, "bars", partition_segment("exchange", exchange), partition_segment("symbol", symbol),
                            partition_segment("date", day), SEAM_FILE)
        write_atomically(bars_parquet_bytes(sorted(bars, key=lambda b: b["window_start"])), path)
    return sum(len(b) for b in by_partition.values())
