"""Parquet sinks: zstd files in hive partitions, each appearing atomically under its final name.

Partition values are percent-encoded, so no symbol from the input can become a path outside
the output directory. Read a whole output with hive partitioning, e.g.
``pyarrow.parquet.read_table("out/bars")`` or duckdb's ``read_parquet('out/bars/**/*.parquet', hive_partitioning=true)``.
"""
from __future__ import annotations

import io
from datetime import datetime, timezone
from urllib.parse import quote

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from io_connectors.atomic_files import write_atomically
from schemas import arrow_schema


# Hive convention: partition columns live in the path, not in the files, so readers that
# discover partitions (pyarrow, polars, duckdb, Spark, BigQuery) see each column once.
BAR_PARTITION_COLUMNS = ("exchange", "symbol")


def partition_segment(name: str, value) -> str:
    """``name=value`` with the value percent-encoded: never a separator, never ``..``."""
    return f"{name}={quote(str(value), safe='')}"


def write_table_atomically(table: pa.Table, final_path: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_atomically(buffer.getvalue(), final_path)


def bar_partition(bar: dict) -> tuple[str, str, str]:
    day = datetime.fromtimestamp(bar["window_start"] / 1_000_000, tz=timezone.utc).date().isoformat()
    return bar["exchange"], bar["symbol"], day


class _WriteBarPartition(beam.DoFn):
    def __init__(self, root: str):
        self._root = root.rstrip("/")
        self._rows = beam.metrics.Metrics.counter("cryptobeam", "bar_rows_written")
        self._filled = beam.metrics.Metrics.counter("cryptobeam", "filled_bars_written")
        self._final_trades = beam.metrics.Metrics.counter("cryptobeam", "trades_in_final_bars")
        self._final_duplicates = beam.metrics.Metrics.counter("cryptobeam", "duplicates_in_final_bars")
        self._files = beam.metrics.Metrics.counter("cryptobeam", "bar_files_written")

    def process(self, element):
        (exchange, symbol, day), bars = element
        bars = sorted(bars, key=lambda b: (b["window_start"], b["is_filled"], b["pane_index"]))
        path = "/".join([self._root, "bars", partition_segment("exchange", exchange),
                         partition_segment("symbol", symbol), partition_segment("date", day), "part-00000.parquet"])
        table = pa.Table.from_pylist(bars, schema=arrow_schema("bar")).drop_columns(list(BAR_PARTITION_COLUMNS))
        write_table_atomically(table, path)
        self._files.inc()
        self._rows.inc(len(bars))
        for bar in bars:
            if bar["is_filled"]:
                self._filled.inc()
            elif bar["is_final"]:
                self._final_trades.inc(bar["trade_count"])
                self._final_duplicates.inc(bar["duplicate_count"])
        yield path


class _WriteDeadLetterPartition(beam.DoFn):
    def __init__(self, root: str):
        self._root = root.rstrip("/")
        self._rows = beam.metrics.Metrics.counter("cryptobeam", "dead_letter_rows_written")

    def process(self, element):
        reason, records = element
        records = sorted(records, key=lambda r: (r["source"], r["source_offset"] or 0))
        path = "/".join([self._root, "dead_letter", partition_segment("reason", reason), "part-00000.parquet"])
        table = pa.Table.from_pylist(records, schema=arrow_schema("dead_letter")).drop_columns(["reason"])
        write_table_atomically(table, path)
        self._rows.inc(len(records))
        yield path


class WriteBarsParquet(beam.PTransform):
    """Bars -> ``bars/exchange=…/symbol=…/date=…/part-00000.parquet`` (one file per partition)."""

    def __init__(self, root: str, label=None):
        super().__init__(label)
        self._root = root

    def expand(self, bars):
        return (bars
                | "KeyByPartition" >> beam.Map(lambda bar: (bar_partition(bar), bar))
                | "GroupPartitions" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WriteBarPartition(self._root)))


class WriteDeadLettersParquet(beam.PTransform):
    """Dead letters -> ``dead_letter/reason=…/part-00000.parquet``."""

    def __init__(self, root: str, label=None):
        super().__init__(label)
        self._root = root

    def expand(self, dead_letters):
        return (dead_letters
                | "KeyByReason" >> beam.Map(lambda record: (record["reason"], record))
                | "GroupReasons" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WriteDeadLetterPartition(self._root)))

