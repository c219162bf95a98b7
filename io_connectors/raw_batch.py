"""A raw batch: records exactly as read, before any parsing, with where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

_ENCODED_NAMES = {"payloads": "lines"}
_FIELD_NAMES = {encoded: name for name, encoded in _ENCODED_NAMES.items()}


@dataclass
class RawBatch:
    source: str
    """File path, with ``!member`` for a file inside an archive."""
    symbol_hint: str | None = None
    """The symbol the file name suggests, used when the records do not say."""
    payloads: pa.Array | None = None
    """Text formats and messages: the bytes as read, one entry per physical line of a file (without
    its line break) or per Kafka message value, as an Arrow binary array; a list of bytes is
    converted."""
    line_numbers: np.ndarray | None = None
    """Where each of ``payloads`` came from: 1-based line numbers, or the messages' Kafka offsets."""
    table: pa.Table | None = None
    """Columnar formats: the rows as read."""
    first_row: int = 1
    """Columnar formats: 1-based row number of the table's first row in the file."""
    row_numbers: np.ndarray | None = None
    """Columnar formats read in a time slice: 1-based row numbers of the rows kept (else consecutive)."""
    extra: dict = field(default_factory=dict)
    dead_letters: list = field(default_factory=list)
    """What the reader could not pass on as records (an over-long line, the unreadable rest of a
    damaged file), as dead letters: whoever reads the batches emits them; parsers never see them."""

    def __getstate__(self) -> dict:
        """``RawBatchCoder`` pickles ``payloads`` under the key ``lines``: the encoding between
        stages is kept apart from the Python field name."""
        return {_ENCODED_NAMES.get(name, name): value for name, value in self.__dict__.items()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({_FIELD_NAMES.get(name, name): value for name, value in state.items()})

    def __post_init__(self):
        if isinstance(self.payloads, list):
            self.payloads = pa.array(self.payloads, pa.binary())

    @property
    def starts_file(self) -> bool:
        if self.payloads is not None:
            return bool(len(self.line_numbers)) and int(self.line_numbers[0]) == 1
        return self.first_row == 1

    def table_row_numbers(self) -> np.ndarray:
        """1-based row number in the file of each row of ``table``."""
        if self.row_numbers is not None:
            return self.row_numbers
        return np.arange(self.first_row, self.first_row + self.table.num_rows, dtype=np.int64)

    def __len__(self) -> int:
        return (
            len(self.payloads) if self.payloads is not None else (self.table.num_rows if self.table is not None else 0)
        )

    @property
    def nbytes(self) -> int:
        """About its encoded size (``transforms.sized_coders``)."""
        parts = (self.payloads, self.line_numbers, self.table, self.row_numbers)
        return sum(part.nbytes for part in parts if part is not None)
