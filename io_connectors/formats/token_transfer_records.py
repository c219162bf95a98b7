"""Token transfers for the Beam pipeline: ethereum-etl export files (``io_connectors.formats.ethereum_etl``)
and Kafka messages in the Avro wire format (``io_connectors.avro_wire``, as ``collect --chain``
publishes them), each as a batch of the skeleton's shape (``transforms.token_transfers``): the
contract's columns, where each row came from, and its original bytes for dead letters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.avro_wire import SchemaStore, WireFormatError, decode
from io_connectors.formats.delimited import looks_like_header
from io_connectors.formats.ethereum_etl import DEFAULT_CHAIN, DEFAULT_STATUS, parse_token_transfers
from io_connectors.raw_batch import RawBatch
from schemas import arrow_schema
from transforms.dead_letter import dead_letter
from transforms.token_transfers import TRANSFER_FIELDS, with_provenance

_STORE: SchemaStore | None = None


def parse_ethereum_etl_transfers(raw: RawBatch, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS, **_options):
    """(transfers with provenance, dead letters) of a batch of an ethereum-etl token_transfers
    export, CSV or JSON lines."""
    table, dead = parse_token_transfers(raw, chain, status)
    rows = _row_lines(raw, table.num_rows, dead)
    if rows is None:  # the lines cannot be told apart: where from is the file alone
        return with_provenance(table, raw.source), dead
    return with_provenance(table, raw.source, raw.line_numbers[rows], raw.payloads.take(pa.array(rows))), dead


def _row_lines(raw: RawBatch, rows: int, dead: list[dict]) -> np.ndarray | None:
    """Positions in the batch of the lines that became the table's rows, in order: the parser
    keeps line order, and a line is a row, a dead letter, blank, or the file's header. None if
    that does not account for every row."""
    numbers = np.asarray(raw.line_numbers, dtype=np.int64)
    kept = pc.greater(pc.binary_length(pc.utf8_trim_whitespace(raw.payloads.cast(pa.string(), safe=False))), 0)
    kept = pc.fill_null(kept, True).to_numpy(zero_copy_only=False).copy()
    rejected = {letter["source_offset"] for letter in dead if letter.get("source") == raw.source}
    kept &= ~np.isin(numbers, np.fromiter((n for n in rejected if n is not None), np.int64))
    if raw.starts_file and kept.any():
        first = int(np.argmax(kept))
        line = raw.payloads[first].as_py().lstrip(b"\xef\xbb\xbf").lstrip()
        if not line.startswith(b"{") and looks_like_header(line.decode("utf-8", "replace").split(",")[0].strip()):
            kept[first] = False
    positions = np.flatnonzero(kept)
    return positions if len(positions) == rows else None


def parse_token_transfer_messages(raw: RawBatch, store: SchemaStore | None = None, **_options):
    """Kafka messages of ``schemas/token_transfer.avsc`` records (``collect --chain``'s
    transfers topic) -> (transfers with provenance, dead letters)."""
    global _STORE
    if store is None:
        _STORE = _STORE or SchemaStore.shipped()
        store = _STORE
    columns = {name: [] for name in TRANSFER_FIELDS}
    offsets, payloads, dead = [], [], []
    for message, offset in zip(raw.payloads.to_pylist(), raw.line_numbers.tolist()):
        try:
            record = decode(message, "token_transfer", store, timestamps_as_micros=True)
        except WireFormatError as error:
            dead.append(dead_letter(error.reason, str(error), "parse", message, raw.source, offset))
            continue
        for name in TRANSFER_FIELDS:
            columns[name].append(record.get(name))
        offsets.append(offset)
        payloads.append(message)
    schema = arrow_schema("token_transfer")
    arrays = [
        pa.array(columns[f.name], pa.int64()).cast(f.type)
        if f.name == "event_time"
        else pa.array(columns[f.name], f.type)
        for f in schema
    ]
    # Nullability is checked by validation, with a reason, not by building the table.
    table = pa.Table.from_arrays(arrays, schema=pa.schema([f.with_nullable(True) for f in schema]))
    return with_provenance(table, raw.source, offsets, payloads), dead
