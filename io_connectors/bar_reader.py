"""Read an output directory's bars back, the way a consumer should.

A bar may have several panes (EARLY, ON_TIME, LATE), and a restarted stream writes the final
pane of the windows it rebuilt a second time. The final bars are the ``is_final`` rows, one per
bar, the newest file winning: files are named ``part-<run>-…`` and a later run sorts later.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.dataset as ds

BAR_KEY = ("exchange", "symbol", "interval", "window_start", "is_filled")


def read_bars(out: str) -> pa.Table:
    """Every bar row under ``out/bars`` with its partition columns and a ``file`` column."""
    dataset = ds.dataset(os.path.join(out, "bars"), format="parquet", partitioning="hive")
    tables = []
    for fragment in dataset.get_fragments():
        table = fragment.to_table(schema=dataset.schema)
        tables.append(table.append_column("file", pa.array([os.path.basename(fragment.path)] * table.num_rows, pa.string())))
    return pa.concat_tables(tables) if tables else dataset.schema.empty_table().append_column("file", pa.array([], pa.string()))


def final_bars(out: str) -> list[dict]:
    """One final row per bar, sorted by bar key."""
    newest: dict[tuple, dict] = {}
    for bar in read_bars(out).filter(ds.field("is_final")).to_pylist():
        key = tuple(bar[name] for name in BAR_KEY)
        if key not in newest or bar["file"] >= newest[key]["file"]:
            newest[key] = bar
    return [newest[key] for key in sorted(newest)]
