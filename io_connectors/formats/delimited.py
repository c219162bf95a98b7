"""Vectorized splitting and number parsing for delimited text, with per-line rejection.

One bad line must cost one dead letter, never the batch: every check here yields a mask, and
the lines that fail it are reported with their original bytes and line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter

_DECIMAL = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NON_FINITE = r"^[+-]?(nan|inf|infinity)$"
INTEGER_DIGITS = 18  # significant digits an integer field may have: always fits int64
_INTEGER = rf"^[+-]?0*[0-9]{{1,{INTEGER_DIGITS}}}$"


@dataclass
class Fields:
    """The lines that split into an accepted number of fields.

    Rows are kept as positions into the split lines, so rejecting lines moves no text; a column
    is cut only when a parser asks for it.
    """

    lists: pa.ListArray
    """Every non-blank line, split at the delimiter."""
    all_line_numbers: np.ndarray
    all_payloads: pa.Array
    """The original bytes of each line of ``lists``."""
    rows: np.ndarray
    """Positions in ``lists`` of the lines kept."""
    dead_letters: list[dict]

    def __len__(self):
        return len(self.rows)

    @property
    def line_numbers(self) -> np.ndarray:
        return self.all_line_numbers[self.rows]

    def column(self, j: int) -> pa.Array:
        """Field j of every kept line (a string array); lines with fewer fields have a null there."""
        offsets = self.lists.offsets.to_numpy()
        first, count = offsets[self.rows], offsets[self.rows + 1] - offsets[self.rows]
        present = count > j
        return self.lists.values.take(pa.array(np.where(present, first + j, -1), pa.int64(), mask=~present))

    def payloads_of(self, mask: np.ndarray) -> pa.Array:
        """The original bytes of the masked kept lines."""
        return self.all_payloads.take(pa.array(self.rows[mask], pa.int64()))

    def keep(self, mask: np.ndarray) -> "Fields":
        return Fields(self.lists, self.all_line_numbers, self.all_payloads, self.rows[mask], self.dead_letters)

    def dead_letter_lines(self, mask: np.ndarray, reason: str, message: str, source: str) -> None:
        """Add a dead letter, with the original bytes and line number, for each masked line."""
        for row in self.rows[mask].tolist():
            self.dead_letters.append(
                dead_letter(
                    reason, message, "parse", self.all_payloads[row].as_py(), source, int(self.all_line_numbers[row])
                )
            )

    def reject(self, mask: np.ndarray, reason: str, message: str, source: str) -> "Fields":
        """Dead-letter the masked lines and keep the rest."""
        self.dead_letter_lines(mask, reason, message, source)
        return self.keep(~mask)


_BOM = "\ufeff"


def _decode(raw: RawBatch, dead: list[dict]) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(text, line numbers, original bytes) of the lines that are valid UTF-8; the others become
    dead letters. A byte-order mark opening a file is not part of its first line's text."""
    lines, numbers = raw.payloads, np.asarray(raw.line_numbers)
    try:
        text = pc.cast(lines, pa.string())  # validates UTF-8
    except pa.ArrowInvalid:
        valid = np.ones(len(lines), bool)
        for i, line in enumerate(lines.to_pylist()):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                valid[i] = False
                dead.append(
                    dead_letter("bad_encoding", f"not UTF-8: {error}", "parse", line, raw.source, int(numbers[i]))
                )
        index = pa.array(np.flatnonzero(valid), pa.int64())
        lines, numbers = lines.take(index), numbers[valid]
        text = pc.cast(lines, pa.string())
    if raw.starts_file and len(text) and text[0].as_py().startswith(_BOM):
        text = pa.concat_arrays([pa.array([text[0].as_py()[len(_BOM) :]], pa.string()), text[1:]])
    return text, numbers, lines


def looks_like_header(first_field: str) -> bool:
    return bool(first_field) and not (first_field[0].isdigit() or first_field[0] in "+-.")


def header_dead_letter(
    header: str, header_names: list[list[str]], delimiter: str, payload: bytes, source: str, line_number: int
) -> list[dict]:
    """A header line is skipped; one naming other columns than expected is also reported."""
    names = [n.strip().lower() for n in header.split(delimiter)]
    if names in header_names:
        return []
    return [
        dead_letter(
            "unexpected_header", f"header {names} is not one of {header_names}", "parse", payload, source, line_number
        )
    ]


def split_fields(
    raw: RawBatch, field_counts: set[int], header_names: list[list[str]] | None = None, delimiter: str = ","
) -> Fields:
    """Split a text batch into fields; blank lines are skipped, a header line at the top of a file
    is recognized and skipped, and lines with an unexpected field count are dead-lettered."""
    dead: list[dict] = []
    text, numbers, payloads = _decode(raw, dead)
    strings = pc.utf8_trim_whitespace(text)
    non_blank = pc.greater(pc.binary_length(strings), 0).to_numpy(zero_copy_only=False)
    if raw.starts_file and header_names is not None and non_blank.any():
        first = int(np.argmax(non_blank))
        header = strings[first].as_py()
        if looks_like_header(header.split(delimiter, 1)[0]):
            dead += header_dead_letter(
                header, header_names, delimiter, payloads[first].as_py(), raw.source, int(numbers[first])
            )
            non_blank[first] = False
    if not non_blank.all():
        keep = pa.array(np.flatnonzero(non_blank), pa.int64())
        strings, numbers, payloads = strings.take(keep), numbers[non_blank], payloads.take(keep)
    lists = pc.split_pattern(strings, delimiter)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    fields = Fields(lists, numbers, payloads, np.arange(len(lists)), dead)
    expected = " or ".join(str(c) for c in sorted(field_counts))
    return fields.reject(~np.isin(counts, sorted(field_counts)), "malformed", f"expected {expected} fields", raw.source)


def parse_float(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok): decimals, and NaN/Inf spelled out (left for validation to reject by name)."""
    strings = pc.fill_null(strings, "")
    ok = pc.match_substring_regex(strings, _DECIMAL).to_numpy(zero_copy_only=False)
    if not ok.all():
        ok = ok | pc.match_substring_regex(strings, _NON_FINITE, ignore_case=True).to_numpy(zero_copy_only=False)
    values = np.full(len(strings), np.nan)
    index = np.flatnonzero(ok)
    if len(index):
        subset = strings if len(index) == len(strings) else strings.take(pa.array(index, pa.int64()))
        try:
            values[index] = pc.cast(subset, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values[index] = [float(s) for s in subset.to_pylist()]
    return values, ok


def parse_int(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) for integers of at most INTEGER_DIGITS significant digits; anything else is not ok."""
    strings = pc.fill_null(strings, "")
    ok = pc.match_substring_regex(strings, _INTEGER).to_numpy(zero_copy_only=False)
    values = np.zeros(len(strings), dtype=np.int64)
    index = np.flatnonzero(ok)
    if len(index):
        subset = strings if len(index) == len(strings) else strings.take(pa.array(index, pa.int64()))
        if pc.any(pc.starts_with(subset, "+")).as_py():
            subset = pc.replace_substring_regex(subset, r"^\+", "")
        try:
            values[index] = pc.cast(subset, pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values[index] = [int(v) for v in subset.to_pylist()]
    return values, ok


def parse_bool(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    lowered = pc.ascii_lower(pc.fill_null(strings, ""))  # no non-ASCII letter lowers to one of these
    true = pc.equal(lowered, "true").to_numpy(zero_copy_only=False)
    false = pc.equal(lowered, "false").to_numpy(zero_copy_only=False)
    return true, true | false


def epoch_to_micros(values: np.ndarray) -> np.ndarray:
    """Binance-style epoch integers to microseconds, deciding the unit per value by magnitude.

    Milliseconds of any date from 1973 to 5138 are below 1e14; microseconds of any date after
    1973 are at or above it. So the unit of every plausible timestamp is never in doubt; values
    outside those years come out out of range and are rejected by validation.
    """
    return np.where((values >= 0) & (values < 100_000_000_000_000), values * 1000, values)
