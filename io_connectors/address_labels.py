"""Address labels (``--labels FILE``): who is behind an address, from a user's CSV
``address,label,entity`` (e.g. ``0x28c6c06298d514db089934071355e5743bf21d60,Binance 14,Binance``).

Labels are enrichment: a transfer from or to an unlabelled address is still a transfer. So the
file's own shape must be right, or the run stops with one ``LabelsError`` whose one-line message
names the file and line (the command line prints it and exits 2); a row whose values cannot be
a label is skipped with a warning (``AddressLabels.warnings``, one line each), since it could
never match a transfer or would only print garbage:

| the file                                             | what happens                          |
| ---------------------------------------------------- | ------------------------------------- |
| missing, a directory, unreadable                     | stop                                  |
| empty, or only blank lines                           | stop: expected the header             |
| larger than 256 MiB                                  | stop: not a label list                |
| not UTF-8, or holding a NUL byte                     | stop, naming the line                 |
| first line not the header ``address,label,entity``   | stop (a missing header is this case)  |
| a row with another number of fields                  | stop: the columns are not these       |
| not CSV (an unterminated quote, a field over 131,072 | stop                                  |
| characters: a huge line)                             |                                       |
| an address listed again with another entity (an     | stop: which one is right only the     |
| empty entity is one too)                             | user knows, and a wrong one misstates |
|                                                      | flows between entities                |
| a row whose address is not 0x and 40 hex digits      | skipped, warning                      |
| a row with an empty label                            | skipped, warning                      |
| a label or entity over 200 characters or holding a   | skipped, warning                      |
| control character                                    |                                       |
| an address listed again, same entity, other label    | the first row stands, warning         |
| an address listed again exactly                      | the first row stands                  |

Addresses are matched lower-cased (a checksummed address is accepted without checking its
checksum). An empty entity is null. Beam-free and cheap to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.user_files import csv_rows, read_user_text, shown

COLUMNS = ["address", "label", "entity"]
MAX_FIELD_CHARS = 200
MAX_FILE_BYTES = 256 * 1024 * 1024  # millions of labelled addresses; guards against a wrong file
MAX_WARNINGS_SHOWN = 20
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class LabelsError(ValueError):
    """A labels file that cannot be used; the message is one line naming file and line."""


@dataclass(frozen=True)
class AddressLabel:
    label: str
    entity: str | None


@dataclass
class AddressLabels:
    labels: dict[str, AddressLabel] = field(default_factory=dict)
    """By lower-case address."""
    warnings: list[str] = field(default_factory=list)
    """One line per skipped or overridden row, the first ``MAX_WARNINGS_SHOWN`` of them."""
    skipped: int = 0
    """Rows not taken with a warning, shown or not."""
    repeated: int = 0
    """Rows repeating an earlier row exactly."""

    def warning_lines(self) -> list[str]:
        """What the command line prints: the warnings, and how many more there were."""
        more = self.skipped - len(self.warnings)
        return self.warnings + ([f"... and {more:,} more row(s) skipped"] if more > 0 else [])

    def label_columns(self, addresses: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(label, entity) of each address (lower-case, as the chain tables hold them); null where unlabelled."""
        known = list(self.labels)
        if not known:
            return pa.nulls(len(addresses), pa.string()), pa.nulls(len(addresses), pa.string())
        position = pc.index_in(addresses, value_set=pa.array(known, pa.string()))
        labels = pa.array([self.labels[a].label for a in known], pa.string()).take(position)
        entities = pa.array([self.labels[a].entity for a in known], pa.string()).take(position)
        return labels, entities


def _problem(address: str, label: str, entity: str) -> str | None:
    """Why a row cannot be a label, or None."""
    if not _ADDRESS.fullmatch(address):
        return f"address {shown(address)} is not 0x and 40 hex digits"
    if not label:
        return "label is empty"
    for column, value in (("label", label), ("entity", entity)):
        if len(value) > MAX_FIELD_CHARS:
            return f"{column} is longer than {MAX_FIELD_CHARS} characters"
        if not value.isprintable():
            return f"{column} holds a control character"
    return None


def parse_labels(text: str, name: str) -> AddressLabels:
    result = AddressLabels()
    first_line: dict[str, int] = {}

    def warn(line: int, message: str) -> None:
        result.skipped += 1
        if len(result.warnings) < MAX_WARNINGS_SHOWN:
            result.warnings.append(f"{name} line {line}: {message}; row skipped")

    for line, (address, label, entity) in csv_rows(text, name, COLUMNS, LabelsError):
        problem = _problem(address, label, entity)
        if problem:
            warn(line, problem)
            continue
        key, row = address.lower(), AddressLabel(label, entity or None)
        before = result.labels.get(key)
        if before is None:
            result.labels[key], first_line[key] = row, line
        elif before.entity != row.entity:
            raise LabelsError(
                f"{name} line {line}: {key} is listed again with entity {shown(entity)}, "
                f"line {first_line[key]} gives {shown(before.entity or '')}"
            )
        elif before != row:
            warn(line, f"{key} is listed again as {shown(label)}, line {first_line[key]} gives {shown(before.label)}")
        else:
            result.repeated += 1
    return result


def read_labels_file(path: str) -> AddressLabels:
    """The user's labels file, or one LabelsError (see the module's table)."""
    text, name = read_user_text(path, LabelsError, MAX_FILE_BYTES, "a label list")
    return parse_labels(text, name)
