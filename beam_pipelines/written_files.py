"""The accounting's written figures counted from a run's Parquet files rather than from its
counters: ``validate`` re-checks an output with them, and a stream's summary trusts them over
the runner's counters (``beam_pipelines.stream_run``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def written_in_files(
    bar_files: list[str], dead_letter_files: list[str], unreadable: list[str] | None = None
) -> dict[str, int]:
    """The accounting's written figures, counted from bar and dead-letter Parquet files rather
    than from counters. With ``unreadable`` (a list), a file that cannot be read counts nothing
    and is listed there; without it, it raises."""
    bars = _columns_of(
        bar_files,
        pa.schema(
            [
                ("is_final", pa.bool_()),
                ("is_filled", pa.bool_()),
                ("trade_count", pa.int64()),
                ("duplicate_count", pa.int64()),
            ]
        ),
        unreadable,
        defaults={"is_filled": False, "duplicate_count": 0},
    )
    final_traded = bars.filter(pc.and_(bars["is_final"], pc.invert(bars["is_filled"])))
    dead = _columns_of(dead_letter_files, pa.schema([("stage", pa.string())]), unreadable)
    from_sinks = _total(pc.equal(dead["stage"], "sink"))  # bars a sink rejected, not input records
    return {
        "bar_files_written": len(bar_files),
        "bar_rows_written": bars.num_rows,
        "filled_bars_written": _total(bars["is_filled"]),
        "trades_in_final_bars": _total(final_traded["trade_count"]),
        "duplicates_in_final_bars": _total(final_traded["duplicate_count"]),
        "dead_letter_rows_written": dead.num_rows - from_sinks,
        "sink_dead_letters_written": from_sinks,
    }


def _columns_of(files: list[str], schema, unreadable: list[str] | None, defaults: dict | None = None):
    """The ``schema``'s columns of every file; a column in ``defaults`` that a table lacks (only
    time bars are ever filled) is that value in each row."""
    tables = []
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            present = set(parquet.schema_arrow.names)
            table = parquet.read(columns=[n for n in schema.names if n in present or n not in (defaults or {})])
            for name, value in (defaults or {}).items():
                if name not in present:
                    table = table.append_column(name, pa.array([value] * table.num_rows, schema.field(name).type))
            tables.append(table.select(schema.names).cast(schema))
        except (pa.ArrowException, OSError):
            if unreadable is None:
                raise
            unreadable.append(path)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _total(column) -> int:
    return int(pc.sum(column).as_py() or 0)
