"""Bounded sources: input files read into raw batches for ``TradesToBars``, by their format
(``io_connectors.source_formats``)."""

from __future__ import annotations

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from io_connectors.files import DEFAULT_LINE_LIMIT, DamagedStream, InputFile, base_name, open_members, text_batches
from io_connectors.formats import normalized
from io_connectors.formats.ethereum_etl import HEADER_KEY
from io_connectors.progress import report_progress
from io_connectors.raw_batch import RawBatch
from io_connectors.raw_batch_coder import RawBatchCoder
from io_connectors.source_formats import SOURCE_FORMAT_KEY, SourceFormat, source_of
from io_connectors.time_slice import WHOLE_FILE, TimeSlice, row_group_time_range
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter
from transforms.dead_letter_counts import count_dead_letter

DEFAULT_BATCH_ROWS = 250_000


def read_raw_batches(
    source: SourceFormat,
    path: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    time_slice: TimeSlice = WHOLE_FILE,
    line_limit: int = DEFAULT_LINE_LIMIT,
):
    """Yield the raw batches of one input file, or of its rows in ``time_slice`` (Parquet only).

    What cannot be passed on as records (a line over ``line_limit`` bytes, the rest of a damaged
    file after the records read before the damage) comes as dead letters on the batches."""
    if time_slice != WHOLE_FILE:
        if source.layout != "parquet":
            raise ValueError(f"only Parquet files can be read by time slice, not {source.name}")
        yield from _parquet_slice_batches(path, batch_rows, time_slice)
    elif source.layout == "text":
        for member, stream in open_members(path):
            hint = source.symbol_from_name(base_name(member.split("!")[-1])) if source.symbol_from_name else None
            yield from _text_member_batches(member, stream, hint, batch_rows, line_limit, source.header)
    elif source.layout == "parquet":
        row = 1
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield RawBatch(source=path, table=pa.Table.from_batches([record_batch]), first_row=row)
            row += record_batch.num_rows
    else:
        yield from _avro_batches(path, batch_rows)


def _text_member_batches(member: str, stream, hint: str | None, batch_rows: int, line_limit: int, header: bool = False):
    """The file's lines in raw batches. With ``header``, every batch after the first carries the
    file's first line in ``extra[HEADER_KEY]``: a parser that finds its columns by the header's
    names reads the whole file right, not only the batch that starts it."""
    first_line = None
    try:
        for lines, numbers, long_lines in text_batches(stream, batch_rows, line_limit):
            raw = RawBatch(
                source=member,
                symbol_hint=hint,
                payloads=lines,
                line_numbers=numbers,
                dead_letters=[_long_line_dead_letter(line, member, line_limit) for line in long_lines],
            )
            if header and len(numbers):
                if int(numbers[0]) == 1:
                    first_line = _first_non_blank(lines)
                elif first_line is not None:
                    raw.extra[HEADER_KEY] = first_line
            yield raw
    except DamagedStream as damage:  # the lines before the damage were passed on; the rest is one record
        yield RawBatch(
            source=member,
            symbol_hint=hint,
            payloads=[],
            line_numbers=np.zeros(0, np.int64),
            dead_letters=[dead_letter("unreadable_file", str(damage), "read", None, member, damage.next_line)],
        )


def _first_non_blank(lines: pa.Array) -> bytes | None:
    """The first line that is not blank, read one at a time (it is nearly always the very first),
    unless it is a JSON object: a file of JSON lines has no header, and a stray CSV line in one is
    read by its field count, in whichever batch it is."""
    for line in lines:
        text = line.as_py()
        if text.strip():
            return None if text.lstrip().removeprefix(b"\xef\xbb\xbf").startswith(b"{") else text
    return None


def _long_line_dead_letter(line, member: str, line_limit: int) -> dict:
    return dead_letter(
        "malformed",
        f"a line of {line.length:,} bytes, over the {line_limit:,}-byte line limit: "
        f"the payload is its first {len(line.head):,} bytes",
        "read",
        line.head,
        member,
        line.number,
    )


def _parquet_slice_batches(path: str, batch_rows: int, time_slice: TimeSlice):
    """The rows of a Parquet file whose event time falls in the slice; row groups whose
    statistics put them wholly outside it are not read."""
    footer = pq.read_metadata(path)
    schema = footer.schema.to_arrow_schema()
    # Rows outside the slice are decoded too (a row group is the unit of reading), so the
    # low-cardinality text columns are read as dictionaries: cheap to decode and to filter.
    categorical = [
        name
        for name in ("exchange", "symbol", "side", "source")
        if name in schema.names and pa.types.is_string(schema.field(name).type)
    ]
    parquet = pq.ParquetFile(path, metadata=footer, read_dictionary=categorical)
    first_rows = np.cumsum([0] + [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]) + 1
    for group in range(parquet.num_row_groups):
        if not time_slice.may_hold(row_group_time_range(parquet, group)) and not _unchecked_group_holds_rows(
            parquet, group, time_slice
        ):
            continue
        row = int(first_rows[group])
        for record_batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group]):
            table = pa.Table.from_batches([record_batch])
            keep = time_slice.holds(*normalized.event_time_micros(table))
            if keep.all():  # the usual batch, inside the slice
                yield RawBatch(source=path, table=table, first_row=row)
            elif keep.any():
                rows = np.flatnonzero(keep)
                yield RawBatch(
                    source=path,
                    table=table.take(pa.array(rows, pa.int64())),
                    first_row=row + int(rows[0]),
                    row_numbers=rows.astype(np.int64) + row,
                )
            row += record_batch.num_rows


def _unchecked_group_holds_rows(parquet: pq.ParquetFile, group: int, time_slice: TimeSlice) -> bool:
    """Whether a row group its statistics place outside the slice has rows in it after all: unless
    the planner found the statistics right, only the group's times can say."""
    if time_slice.statistics_checked:
        return False
    times = parquet.read_row_group(group, columns=["event_time"])
    return bool(time_slice.holds(*normalized.event_time_micros(times)).any())


def _avro_batches(path: str, batch_rows: int):
    """The file's records, ``batch_rows`` at a time; if the file is damaged partway, the records
    before the damage, then one dead letter for the rest."""
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        records, row = [], 1
        reader = iter(fastavro.reader(handle))  # a header that cannot be read: the whole file is unreadable
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except Exception as error:  # a truncated or corrupt block: fastavro raises several types
                if records:
                    yield RawBatch(source=path, table=_records_table(records), first_row=row)
                    row += len(records)
                yield RawBatch(
                    source=path,
                    table=pa.table({}),
                    first_row=row,
                    dead_letters=[
                        dead_letter(
                            "unreadable_file",
                            f"damaged from record {row:,}: {type(error).__name__}: {error}",
                            "read",
                            None,
                            path,
                            row,
                        )
                    ],
                )
                return
            records.append(record)
            if len(records) == batch_rows:
                yield RawBatch(source=path, table=_records_table(records), first_row=row)
                row, records = row + len(records), []
        if records:
            yield RawBatch(source=path, table=_records_table(records), first_row=row)


def _records_table(records: list[dict]) -> pa.Table:
    names = list(records[0])
    return pa.table({name: _column([r.get(name) for r in records]) for name in names})


def _column(values: list) -> pa.Array:
    """A column of record values; a union-typed field mixing text and numbers (say, a price that
    is sometimes a string) becomes text, which the parser converts value by value."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], pa.string())


class _ReadFile(beam.DoFn):
    def __init__(self, source: SourceFormat, batch_rows: int, time_slice: TimeSlice, line_limit: int):
        self._source, self._batch_rows, self._time_slice, self._line_limit = source, batch_rows, time_slice, line_limit

    def process(self, input_file: InputFile):
        source = source_of(input_file, self._source)
        try:
            for raw in read_raw_batches(source, input_file.path, self._batch_rows, self._time_slice, self._line_limit):
                letters, raw.dead_letters = raw.dead_letters, []
                yield from _emit_dead_letters(letters)
                if len(raw):
                    raw.extra[SOURCE_FORMAT_KEY] = source.name  # which parser takes it, in a run of several sources
                    yield raw
        except Exception as error:  # a corrupt archive, a CSV given as Parquet, an I/O error...
            # The file's records cannot be counted, so the file itself is one record: one dead letter.
            yield from _emit_dead_letters(
                [dead_letter("unreadable_file", f"{type(error).__name__}: {error}", "read", None, input_file.path)]
            )
        report_progress(files=1, bytes=input_file.size)


def _emit_dead_letters(letters: list[dict]):
    """Records the reader could not pass on: each counts as read, and as a dead letter."""
    if letters:
        beam.metrics.Metrics.counter("cryptobeam", "records_in").inc(len(letters))
    for letter in letters:
        count_dead_letter("cryptobeam", letter["reason"])
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)


class ReadTradeFiles(beam.PTransform):
    """File list -> raw batches, one file per DoFn call so runners can read files in parallel.

    Each file is read as its own format (``InputFile.source``), else as ``source``."""

    def __init__(
        self,
        source: SourceFormat | None,
        files: list[InputFile],
        batch_rows: int = DEFAULT_BATCH_ROWS,
        time_slice: TimeSlice = WHOLE_FILE,
        line_limit: int = DEFAULT_LINE_LIMIT,
    ):
        super().__init__()
        self._source, self._files, self._batch_rows, self._time_slice = source, files, batch_rows, time_slice
        self._line_limit = line_limit

    def expand(self, pbegin):
        """Returns raw batches (main output) and ``dead_letter`` for what cannot be read."""
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadFiles"
            >> beam.ParDo(_ReadFile(self._source, self._batch_rows, self._time_slice, self._line_limit))
            .with_output_types(RawBatchCoder.value_type)
            .with_outputs(DEAD_LETTER_TAG, main="raw")
        )
