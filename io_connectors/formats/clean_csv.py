"""The fast path for delimited text: a batch without one bad line, converted by Arrow's CSV reader.

The line-by-line path (``delimited``) gives every line its own verdict, at a cost per line.
Exchange dumps rarely hold a bad line, and for a clean batch Arrow's reader converts the wanted
columns in one pass at a fraction of that. The fast path answers only when its answer is certain
to be the line-by-line path's; on any doubt it returns None and the caller takes the
line-by-line path, which finds and dead-letters the bad lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from io_connectors.formats.delimited import INTEGER_DIGITS, header_dead_letter, looks_like_header
from io_connectors.raw_batch import RawBatch

# The line-by-line path accepts integers of at most INTEGER_DIGITS significant digits.
_INTEGER_LIMIT = 10**INTEGER_DIGITS
# Exactly the spellings the line-by-line path accepts in any case (it lowercases first).
_TRUE, _FALSE = ["true", "True", "TRUE"], ["false", "False", "FALSE"]


@dataclass
class CleanBatch:
    columns: dict[int, np.ndarray]
    """The wanted fields, by position, converted."""
    line_numbers: np.ndarray
    payloads: pa.Array
    dead_letters: list[dict]
    """Only ever an unexpected header's."""


def read_clean_batch(
    raw: RawBatch,
    field_counts: set[int],
    header_names: list[list[str]],
    types: dict[int, pa.DataType],
    delimiter: str = ",",
) -> CleanBatch | None:
    """The wanted fields of a clean batch, or None.

    Clean means: printable ASCII without spaces (so nothing to trim, no encoding to doubt), no
    blank line, the same accepted field count on every line, and every wanted field converted:
    integers under 10**18 in magnitude, floats finite, booleans spelled true or false.
    """
    lines, numbers = raw.payloads, np.asarray(raw.line_numbers)
    if lines is None or not len(lines):
        return None
    if lines.type != pa.binary():
        return None
    _, offset_buffer, data_buffer = lines.buffers()
    offsets = np.frombuffer(offset_buffer, np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
    if len(data) and (data.min() < 0x21 or data.max() > 0x7E):  # a byte outside '!'..'~'
        return None
    dead, skip = [], 0
    first = lines[0].as_py().decode("ascii")
    if raw.starts_file and looks_like_header(first.split(delimiter, 1)[0]):
        dead += header_dead_letter(first, header_names, delimiter, lines[0].as_py(), raw.source, int(numbers[0]))
        skip = 1
        if len(lines) == 1:
            return CleanBatch(
                {j: pa.array([], t).to_numpy(zero_copy_only=False) for j, t in types.items()},
                numbers[1:],
                lines[1:],
                dead,
            )
        first = lines[1].as_py().decode("ascii")
    field_count = first.count(delimiter) + 1
    if field_count not in field_counts:
        return None
    names = [f"f{j}" for j in range(field_count)]
    try:
        table = pcsv.read_csv(
            _with_line_breaks(lines),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=skip, use_threads=False),
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter, quote_char=False, escape_char=False, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={names[j]: t for j, t in types.items()},
                include_columns=[names[j] for j in types],
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                true_values=_TRUE,
                false_values=_FALSE,
            ),
        )
    except pa.ArrowException:  # a line with another field count, a bad value: the slow path says which
        return None
    if table.num_rows != len(lines) - skip:
        return None
    columns = {}
    for j, kind in types.items():
        values = table.column(names[j]).to_numpy()
        if pa.types.is_integer(kind) and ((values >= _INTEGER_LIMIT) | (values <= -_INTEGER_LIMIT)).any():
            return None
        if pa.types.is_floating(kind) and not np.isfinite(values).all():
            return None
        columns[j] = values
    return CleanBatch(columns, numbers[skip:], lines[skip:], dead)


def _with_line_breaks(lines: pa.Array) -> pa.Buffer:
    """The lines back to back, a line break between each two."""
    whole = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    return pc.binary_join(whole, pa.scalar(b"\n", pa.binary()))[0].as_buffer()
