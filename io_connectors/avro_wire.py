"""Self-describing Kafka messages: Avro single-object encoding with a local schema store.

Every message is ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO fingerprint (little endian)
+ the Avro binary body. A consumer looks the fingerprint up in its store and decodes with Avro
schema resolution into the schema it reads with, so older and newer compatible writers both
work. A message that cannot be decoded raises ``WireFormatError`` with a reason suitable for a
dead letter: ``not_single_object_encoded``, ``unknown_schema``, ``incompatible_schema`` or
``malformed``.
"""
from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import SCHEMA_DIR, parsed_avro_schema

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


class WireFormatError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def schema_fingerprint(parsed_schema) -> bytes:
    """The CRC-64-AVRO fingerprint of the schema's parsing canonical form, as 8 little-endian bytes."""
    value = int(fingerprint(to_parsing_canonical_form(parsed_schema), "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


class SchemaStore:
    """Writer schemas by fingerprint: every ``.avsc`` the project ships, current and historical."""

    def __init__(self):
        self._by_fingerprint: dict[bytes, dict] = {}

    def add(self, schema: dict) -> bytes:
        parsed = fastavro.parse_schema(schema, _write_hint=False)
        key = schema_fingerprint(parsed)
        self._by_fingerprint[key] = parsed
        return key

    @classmethod
    def shipped(cls) -> "SchemaStore":
        store = cls()
        for path in sorted(Path(SCHEMA_DIR).rglob("*.avsc")):
            store.add(json.loads(path.read_text()))
        return store

    def writer_schema(self, key: bytes):
        return self._by_fingerprint.get(key)


@lru_cache(maxsize=None)
def _shipped_header(name: str) -> bytes:
    """Computing a fingerprint costs about 200 µs; a shipped schema's header is computed once."""
    return MAGIC + schema_fingerprint(parsed_avro_schema(name))


def encode(record: dict, schema) -> bytes:
    """One record as a single-object-encoded message (``schema``: a name like ``trade`` or a parsed schema)."""
    if isinstance(schema, str):
        parsed, header = parsed_avro_schema(schema), _shipped_header(schema)
    else:
        parsed, header = schema, MAGIC + schema_fingerprint(schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    return header + body.getvalue()


def decode(message: bytes, reader_schema, store: SchemaStore) -> dict:
    """Decode a message written with any schema in ``store`` into ``reader_schema``."""
    if len(message) < HEADER_SIZE or message[:2] != MAGIC:
        raise WireFormatError("not_single_object_encoded", "the message does not start with the Avro single-object header")
    writer = store.writer_schema(message[2:HEADER_SIZE])
    if writer is None:
        raise WireFormatError("unknown_schema", f"no schema with fingerprint {message[2:HEADER_SIZE].hex()} is known")
    reader = parsed_avro_schema(reader_schema) if isinstance(reader_schema, str) else reader_schema
    body = io.BytesIO(message[HEADER_SIZE:])
    try:
        record = fastavro.schemaless_reader(body, writer, reader)
    except fastavro.read.SchemaResolutionError as error:
        raise WireFormatError("incompatible_schema", f"cannot read this writer schema as the reader schema: {error}") from None
    except (EOFError, ValueError, IndexError, UnicodeDecodeError, TypeError) as error:
        raise WireFormatError("malformed", f"the Avro body cannot be decoded: {type(error).__name__}: {error}") from None
    if body.tell() != len(message) - HEADER_SIZE:
        raise WireFormatError("malformed", "bytes left over after the Avro record")
    return record
