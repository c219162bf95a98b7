"""Small CSV tables a user names on the command line (``--instruments``, ``--tokens``, ``--labels``):
read whole and checked, or one error of the caller's type whose one-line message names the file
and line.

What every such file must be, whatever its columns: a readable file (not a directory) of at most
a given size, UTF-8 (a byte-order mark is allowed), without NUL bytes, and CSV whose first line
is the exact header the table expects. Python's csv module refuses a field over its limit of
131,072 characters, so a huge line is reported as not CSV rather than read into memory as a value.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator


def shown(text: str, limit: int = 60) -> str:
    """Text quoted for a one-line message: escapes for line breaks and control characters, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def read_user_text(path: str, error: type[Exception], max_bytes: int, what: str) -> tuple[str, str]:
    """(text, name to report it by) of the user's file ``path``; ``error`` with one line otherwise.

    ``what`` names the table in messages, with its article, e.g. 'a token list'."""
    name = os.path.basename(path) or path
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, not {what} CSV file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as failure:
        raise error(f"{path}: cannot be read: {failure.strerror or failure}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // (1024 * 1024)} MiB, not {what}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as failure:
        line = data[: failure.start].count(b"\n") + 1
        raise error(f"{name} line {line}: not UTF-8") from None
    if "\x00" in text:
        raise error(f"{name} line {text[: text.index(chr(0))].count(chr(10)) + 1}: holds a NUL byte")
    return text, name


def csv_rows(text: str, name: str, columns: list[str], error: type[Exception]) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped values) of each row after the header, which must be ``columns``
    (case and surrounding spaces aside); blank lines are skipped. A file that is empty, has
    another header, a row of another width or is not CSV raises ``error``."""
    header_text = ",".join(columns)
    if not text.strip():
        raise error(f"{name}: empty, expected the header {header_text}")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != columns:
            raise error(f"{name} line 1: expected the header {header_text}, got {shown(','.join(header or []))}")
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(columns):
                raise error(f"{name} line {reader.line_num}: expected {header_text}, got {len(row)} field(s)")
            yield reader.line_num, [value.strip() for value in row]
    except csv.Error as failure:
        raise error(f"{name} line {reader.line_num}: not CSV: {failure}") from None


def check_text_fields(
    name: str, line: int, columns: list[str], values: list[str], error: type[Exception], max_chars: int
) -> None:
    """``error`` naming the first of a row's values that is empty, longer than ``max_chars`` or
    holds a control character."""
    for column, value in zip(columns, values):
        if not value:
            raise error(f"{name} line {line}: {column} is empty")
        if len(value) > max_chars:
            raise error(f"{name} line {line}: {column} is longer than {max_chars} characters")
        if not value.isprintable():
            raise error(f"{name} line {line}: {column} holds a control character")
