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
_INTEGER = r"^[+-]?[0-9]{1,18}$"


@dataclass
class Fields:
    """The lines that split into an accepted number of fields."""
    columns: list[pa.Array]
    """Field j of every kept line (string arrays); lines with fewer fields have nulls there."""
    line_numbers: np.ndarray
    payloads: pa.Array
    field_counts: np.ndarray
    dead_letters: list[dict]

    def __len__(self):
        return len(self.line_numbers)

    def keep(self, mask: np.ndarray) -> "Fields":
        index = pa.array(np.flatnonzero(mask), pa.int64())
        return Fields([c.take(index) for c in self.columns], self.line_numbers[mask],
                      self.payloads.take(index), self.field_counts[mask], self.dead_letters)

    def dead_letter_lines(self, mask: np.ndarray, reason: str, message: str, source: str) -> None:
        """Add a dead letter, with the original bytes and line number, for each masked line."""
        for i in np.flatnonzero(mask).tolist():
            self.dead_letters.append(dead_letter(reason, message, "parse", self.payloads[i].as_py(), source,
                                                 int(self.line_numbers[i])))

    def reject(self, mask: np.ndarray, reason: str, message: str, source: str) -> "Fields":
        """Dead-letter the masked lines and keep the rest."""
        self.dead_letter_lines(mask, reason, message, source)
        return self.keep(~mask)


def _decode(raw: RawBatch, dead: list[dict]):
    """Decode lines as UTF-8; lines that are not valid UTF-8 become dead letters."""
    try:
        text = b"\n".join(raw.lines).decode("utf-8")
        return text.split("\n"), raw.line_numbers, raw.lines
    except UnicodeDecodeError:
        texts, numbers, payloads = [], [], []
        for line, number in zip(raw.lines, raw.line_numbers.tolist()):
            try:
                texts.append(line.decode("utf-8"))
                numbers.append(number)
                payloads.append(line)
            except UnicodeDecodeError as error:
                dead.append(dead_letter("bad_encoding", f"not UTF-8: {error}", "parse", line, raw.source, number))
        return texts, np.asarray(numbers, dtype=np.int64), payloads


def looks_like_header(first_field: str) -> bool:
    return bool(first_field) and not (first_field[0].isdigit() or first_field[0] in "+-.")


def split_fields(raw: RawBatch, field_counts: set[int], header_names: list[list[str]] | None = None,
                 delimiter: str = ",") -> Fields:
    """Split a text batch into fields; blank lines are skipped, a header line at the top of a file
    is recognized and skipped, and lines with an unexpected field count are dead-lettered."""
    dead: list[dict] = []
    texts, numbers, payloads = _decode(raw, dead)
    if raw.starts_file and texts and texts[0].startswith("\ufeff"):
        texts[0] = texts[0][1:]  # a UTF-8 byte-order mark is not part of the first field
    strings = pc.utf8_trim_whitespace(pa.array(texts, pa.string()))
    non_blank = pc.greater(pc.utf8_length(strings), 0).to_numpy(zero_copy_only=False)
    if raw.starts_file and header_names is not None and non_blank.any():
        first = int(np.argmax(non_blank))
        header = strings[first].as_py()
        if looks_like_header(header.split(delimiter, 1)[0]):
            names = [n.strip().lower() for n in header.split(delimiter)]
            if names not in header_names:
                dead.append(dead_letter("unexpected_header", f"header {names} is not one of {header_names}",
                                        "parse", payloads[first], raw.source, int(numbers[first])))
            non_blank[first] = False
    keep = pa.array(np.flatnonzero(non_blank), pa.int64())
    strings = strings.take(keep)
    numbers = np.asarray(numbers)[non_blank]
    payload_array = pa.array(payloads, pa.binary()).take(keep)
    lists = pc.split_pattern(strings, delimiter)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    ok = np.isin(counts, sorted(field_counts))
    offsets = lists.offsets.to_numpy()[:-1]
    flat = lists.flatten()
    columns = []
    for j in range(max(field_counts)):
        present = ok & (counts > j)
        index = np.where(present, offsets + j, -1)
        columns.append(flat.take(pa.array(index, pa.int64(), mask=~present)))
    fields = Fields(columns, numbers, payload_array, counts, dead)
    expected = " or ".join(str(c) for c in sorted(field_counts))
    return fields.reject(~ok, "malformed", f"expected {expected} fields", raw.source)


def parse_float(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok): decimals, and NaN/Inf spelled out (left for validation to reject by name)."""
    strings = pc.fill_null(strings, "")
    ok = pc.or_(pc.match_substring_regex(strings, _DECIMAL),
                pc.match_substring_regex(strings, _NON_FINITE, ignore_case=True)).to_numpy(zero_copy_only=False)
    values = np.full(len(strings), np.nan)
    index = np.flatnonzero(ok)
    if len(index):
        subset = strings.take(pa.array(index, pa.int64()))
        try:
            values[index] = pc.cast(subset, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values[index] = [float(s) for s in subset.to_pylist()]
    return values, ok


def parse_int(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) for integers of at most 18 digits; anything else is not ok."""
    strings = pc.fill_null(strings, "")
    ok = pc.match_substring_regex(strings, _INTEGER).to_numpy(zero_copy_only=False)
    values = np.zeros(len(strings), dtype=np.int64)
    index = np.flatnonzero(ok)
    if len(index):
        subset = pc.replace_substring_regex(strings.take(pa.array(index, pa.int64())), r"^\+", "")
        try:
            values[index] = pc.cast(subset, pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values[index] = [int(v) for v in subset.to_pylist()]
    return values, ok


def parse_bool(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    lowered = pc.utf8_lower(pc.fill_null(strings, ""))
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
