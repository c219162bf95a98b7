"""Reading what a backfill or a stream wrote to its output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

PANE_FIELDS = ("pane_timing", "pane_index", "is_final", "file")


def summary(out) -> dict:
    return json.loads((Path(out) / "_SUMMARY.json").read_text())


def bars_of(out: Path) -> list[dict]:
    rows = pq.read_table(out / "bars").drop_columns(["date"]).to_pylist()
    return sorted(rows, key=lambda b: (b["symbol"], b["window_start"], b["is_filled"], b["pane_index"]))


def without_panes(bars: list[dict]) -> list[dict]:
    """The bars without what says which pane carried them, to compare a stream's with a backfill's."""
    return [{k: v for k, v in bar.items() if k not in PANE_FIELDS} for bar in bars]
