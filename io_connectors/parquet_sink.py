"""Parquet sinks: zstd files in hive partitions, each appearing atomically under its final name.

Bounded runs write one file per partition when the input is exhausted (their bars arrive
grouped, see ``beam_pipelines.outputs``). Unbounded runs pass ``flush_every_s``: records are
grouped per partition in the global window, a processing-time trigger fires a pane every so
often, and each pane becomes its own file
(``part-<run>-<pane index>``). Grouping keeps the watermark held at the oldest unwritten record,
so downstream of a writer the watermark says what is on disk.

Partition values are percent-encoded, so no symbol from the input can become a path outside
the output directory. A value too long for one path segment (file systems allow 255 bytes) is cut
and ends in ``~`` and a hash of the whole value, which such a file keeps in its Parquet metadata
(``cryptobeam.partition``); ``io_connectors.bar_reader`` restores it. Read a whole output with
hive partitioning, e.g. ``pyarrow.parquet.read_table("out/bars")`` or duckdb's
``read_parquet('out/bars/**/*.parquet', hive_partitioning=true)``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import operator
from typing import NamedTuple
from urllib.parse import quote

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as windows

from io_connectors import bar_tables
from io_connectors.atomic_files import write_atomically
from io_connectors.bar_tables import PARTITION_METADATA_KEY, file_name_for
from schemas import arrow_schema, parsed_avro_schema
from transforms.computations import TIME_BARS, OutputTable
from transforms.event_time import micros_to_datetime

MICROS_PER_DAY = 86_400_000_000

# Hive convention: partition columns live in the path, not in the files, so readers that
# discover partitions (pyarrow, polars, duckdb, Spark, BigQuery) see each column once.
BAR_PARTITION_COLUMNS = ("exchange", "symbol")


MAX_SEGMENT_BYTES = 255
"""The longest file or directory name Linux, macOS and Windows file systems accept."""
_HASH_CHARS = 16


def partition_segment(name: str, value) -> str:
    """``name=value`` with the value percent-encoded: never a separator, never ``..``. A value
    whose segment would be over ``MAX_SEGMENT_BYTES`` keeps as much of its start as fits, then
    ``~`` and the first hex digits of its SHA-256; ``~`` is encoded in every other value, so a
    cut value never equals a whole one."""
    text = str(value)
    if not _cut(name, text):
        return f"{name}={_encoded(text)}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    budget = MAX_SEGMENT_BYTES - len(name) - 2 - _HASH_CHARS
    kept = []
    for character in text:
        encoded = _encoded(character)
        if len(encoded) > budget:
            break
        kept.append(encoded)
        budget -= len(encoded)
    return f"{name}={''.join(kept)}~{digest}"


def _encoded(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass").replace("~", "%7E")


def _cut(name: str, text: str) -> bool:
    return len(name) + 1 + len(_encoded(text)) > MAX_SEGMENT_BYTES


def partition_values_metadata(values: dict[str, str]) -> dict[bytes, bytes] | None:
    """The file metadata that keeps partition values whose path segment had to be cut; None when none was."""
    cut = {name: str(value) for name, value in values.items() if _cut(name, str(value))}
    return {PARTITION_METADATA_KEY: json.dumps(cut, ensure_ascii=False).encode()} if cut else None


def bar_partition(bar: dict) -> tuple[str, str, str]:
    return bar["exchange"], bar["symbol"], _day_of(bar["window_start"] // MICROS_PER_DAY)


@functools.lru_cache(maxsize=1 << 16)
def _day_of(day_number: int) -> str:
    """The UTC date of a day since the epoch, formatted once per day rather than once per bar."""
    return micros_to_datetime(day_number * MICROS_PER_DAY).date().isoformat()


def parquet_bytes(table: pa.Table, metadata: dict[bytes, bytes] | None = None) -> bytes:
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def bars_parquet_bytes(bars: list[dict], schema: str = "bar") -> bytes:
    """A bar partition file: the bars' schema without the partition columns the path holds (their
    whole values in the file's metadata, where the path could hold only part of one)."""
    table = pa.Table.from_pylist(bars, schema=arrow_schema(schema)).drop_columns(list(BAR_PARTITION_COLUMNS))
    metadata = partition_values_metadata({name: bars[0][name] for name in BAR_PARTITION_COLUMNS}) if bars else None
    return parquet_bytes(table, metadata)


def _avro_bytes(bars: list[dict], schema: str = "bar") -> bytes:
    """Avro files carry whole bar records, exactly as their schema (``schemas/<schema>.avsc``) publishes them."""
    buffer = io.BytesIO()
    fastavro.writer(buffer, parsed_avro_schema(schema), bars, codec="deflate")
    return buffer.getvalue()


BAR_FILE_FORMATS = {"parquet": bars_parquet_bytes, "avro": _avro_bytes}
assert tuple(BAR_FILE_FORMATS) == bar_tables.BAR_FILE_FORMATS


class _WriteBarPartition(beam.DoFn):
    """Writes one partition's bars. What the bars hold is counted where they are finalized
    (``beam_pipelines.outputs``), the same for every sink; the sink of record (``counts_files``)
    counts its files."""

    def __init__(
        self,
        root: str,
        file_name: str,
        file_format: str = "parquet",
        counts_files: bool = True,
        table: OutputTable = TIME_BARS,
    ):
        self._root, self._file_name = root.rstrip("/"), file_name
        self._encode, self._counts_files = BAR_FILE_FORMATS[file_format], counts_files
        self._directory = bar_tables.bar_directory(table.name, file_format)
        self._schema, self._bar_of = table.schema, operator.itemgetter(*table.identity)
        self._files = beam.metrics.Metrics.counter("cryptobeam", "bar_files_written")

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        (exchange, symbol, day), bars = element
        bars = sorted(bars, key=lambda b: (self._bar_of(b), b["pane_index"]))
        if bars:  # a runner may fire an empty closing pane (Flink does): no file for it
            path = "/".join(
                [
                    self._root,
                    self._directory,
                    partition_segment("exchange", exchange),
                    partition_segment("symbol", symbol),
                    partition_segment("date", day),
                    self._file_name.format(pane=pane.index),
                ]
            )
            write_atomically(self._encode(bars, self._schema), path)
            if self._counts_files:
                self._files.inc()
            yield WrittenFile(path, max(bar["window_end"] for bar in bars))


class _WriteDeadLetterPartition(beam.DoFn):
    def __init__(self, root: str, file_name: str):
        self._root, self._file_name = root.rstrip("/"), file_name
        self._rows = beam.metrics.Metrics.counter("cryptobeam", "dead_letter_rows_written")
        self._sink_rows = beam.metrics.Metrics.counter("cryptobeam", "sink_dead_letters_written")

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        reason, records = element
        records = sorted(records, key=lambda r: (r["source"], r["source_offset"] or 0))
        if records:  # no file for an empty pane
            path = "/".join(
                [
                    self._root,
                    "dead_letter",
                    partition_segment("reason", reason),
                    self._file_name.format(pane=pane.index),
                ]
            )
            table = pa.Table.from_pylist(records, schema=arrow_schema("dead_letter")).drop_columns(["reason"])
            write_atomically(parquet_bytes(table), path)
            from_sinks = sum(1 for r in records if r["stage"] == "sink")  # bars a sink rejected, not input records
            self._sink_rows.inc(from_sinks)
            self._rows.inc(len(records) - from_sinks)
            yield WrittenFile(path, None)


class WrittenFile(NamedTuple):
    path: str
    through_us: int | None
    """Bar files: the latest window end they hold."""


class WritePartitions(beam.PTransform):
    """Group records by partition and write each group (each pane, when unbounded) with one
    writer DoFn call. Returns the ``WrittenFile``s."""

    def __init__(self, partition_of, writer: beam.DoFn, flush_every_s: float | None = None, label=None):
        super().__init__(label)
        self._partition_of, self._writer, self._flush_every_s = partition_of, writer, flush_every_s

    def expand(self, records):
        keyed = records | "KeyByPartition" >> beam.Map(lambda record, key=self._partition_of: (key(record), record))
        if self._flush_every_s:
            keyed = keyed | "FilePanes" >> beam.WindowInto(
                windows.GlobalWindows(),
                trigger=triggers.Repeatedly(triggers.AfterProcessingTime(self._flush_every_s)),
                accumulation_mode=triggers.AccumulationMode.DISCARDING,
                timestamp_combiner=windows.TimestampCombiner.OUTPUT_AT_EARLIEST,
            )
        return keyed | "GroupPartitions" >> beam.GroupByKey() | "WriteFiles" >> beam.ParDo(self._writer)


def write_bar_files(bars, file_format: str, label: str, counts_files: bool):
    """``bars`` (``beam_pipelines.outputs.BarsToWrite``) -> ``bars/`` (Parquet) or ``bars_avro/`` (Avro)
    ``exchange=…/symbol=…/date=…/<file>``; returns the ``WrittenFile``s. A bounded run's partitions
    arrive grouped and finalized, one file each; a stream's bars are grouped here, a file per
    partition per pane (``flush_every_s``)."""
    writer = _WriteBarPartition(
        bars.out, file_name_for(bars.run, file_format, bars.unbounded), file_format, counts_files, bars.table
    )
    if bars.partitions is not None:
        return bars.partitions | label >> beam.ParDo(writer)
    return bars.bars | label >> WritePartitions(bar_partition, writer, bars.flush_every_s)


def WriteDeadLettersParquet(
    root: str, file_name: str = "part-all.parquet", flush_every_s: float | None = None
) -> beam.PTransform:
    """Dead letters -> ``dead_letter/reason=…/<file_name>``."""
    return WritePartitions(lambda record: record["reason"], _WriteDeadLetterPartition(root, file_name), flush_every_s)
