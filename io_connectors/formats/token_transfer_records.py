"""Token transfers for the Beam pipeline: ethereum-etl export files (``io_connectors.formats.ethereum_etl``)
and Kafka messages in the Avro wire format (``io_connectors.avro_wire``, as ``collect --chain``
publishes them), each as a batch of the skeleton's shape (``transforms.token_transfers``): the
contract's columns, where each row came from, and its original bytes for dead letters. Blocks
from ethereum-etl's blocks export likewise, for the transfers' join (``transforms.block_join``).
"""

from __future__ import annotations

import pyarrow as pa

from io_connectors.avro_wire import SchemaStore
from io_connectors.formats.ethereum_etl import (
    BLOCK_EXPORT,
    DEFAULT_CHAIN,
    DEFAULT_STATUS,
    TOKEN_TRANSFER_EXPORT,
    parse_rows,
)
from io_connectors.formats.kafka_avro import decode_messages
from io_connectors.raw_batch import RawBatch
from schemas import arrow_schema
from transforms.block_join import with_block_provenance
from transforms.token_transfers import TRANSFER_FIELDS, with_provenance


def parse_ethereum_etl_transfers(raw: RawBatch, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS, **_options):
    """(transfers with provenance, dead letters) of a batch of an ethereum-etl token_transfers
    export, CSV or JSON lines."""
    parsed = parse_rows(raw, TOKEN_TRANSFER_EXPORT, chain, status)
    return with_provenance(parsed.table, raw.source, parsed.line_numbers, parsed.payloads), parsed.dead_letters


def parse_ethereum_etl_blocks(raw: RawBatch, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS, **_options):
    """(blocks with provenance, dead letters) of a batch of an ethereum-etl blocks export, CSV or
    JSON lines."""
    parsed = parse_rows(raw, BLOCK_EXPORT, chain, status)
    return with_block_provenance(parsed.table, raw.source, parsed.line_numbers, parsed.payloads), parsed.dead_letters


def parse_token_transfer_messages(raw: RawBatch, store: SchemaStore | None = None, **_options):
    """Kafka messages of ``schemas/token_transfer.avsc`` records (``collect --chain``'s
    transfers topic) -> (transfers with provenance, dead letters)."""
    decoded = decode_messages(raw, "token_transfer", store)
    columns = {name: decoded.column(name) for name in TRANSFER_FIELDS}
    schema = arrow_schema("token_transfer")
    arrays = [
        pa.array(columns[f.name], pa.int64()).cast(f.type)
        if f.name == "event_time"
        else pa.array(columns[f.name], f.type)
        for f in schema
    ]
    # Nullability is checked by validation, with a reason, not by building the table.
    table = pa.Table.from_arrays(arrays, schema=pa.schema([f.with_nullable(True) for f in schema]))
    return with_provenance(table, raw.source, decoded.offsets, decoded.payloads), decoded.dead_letters
