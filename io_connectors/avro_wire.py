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
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import SCHEMA_DIR, parsed_avro_schema
from transforms.event_time import datetime_to_micros

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
        self._sources: dict[bytes, dict] = {}
        self._readers: dict[tuple[bytes, bool], object] = {}

    def add(self, schema: dict) -> bytes:
        parsed = fastavro.parse_schema(schema, _write_hint=False)
        key = schema_fingerprint(parsed)
        self._by_fingerprint[key] = parsed
        self._sources[key] = schema
        return key

    @classmethod
    def shipped(cls) -> "SchemaStore":
        store = cls()
        for path in sorted(Path(SCHEMA_DIR).rglob("*.avsc")):
            store.add(json.loads(path.read_text()))
        return store

    def writer_schema(self, key: bytes):
        return self._by_fingerprint.get(key)

    def read_as_written(self, key: bytes, body: io.BytesIO, timestamps_as_micros: bool) -> dict:
        """A body read with its own writer schema, no resolution; timestamps as integer micros if asked."""
        prepared = self._readers.get((key, timestamps_as_micros))
        if prepared is None:
            source = self._sources[key]
            prepared = _RECORD_READER.prepare(_without_timestamp_types(source) if timestamps_as_micros else source)
            self._readers[(key, timestamps_as_micros)] = prepared
        return _RECORD_READER.read(body, prepared)


def _without_timestamp_types(schema):
    """The schema with its timestamp-micros annotations dropped: the bytes are the same longs."""
    if isinstance(schema, dict):
        return {
            k: _without_timestamp_types(v)
            for k, v in schema.items()
            if not (k == "logicalType" and v == "timestamp-micros")
        }
    if isinstance(schema, list):
        return [_without_timestamp_types(item) for item in schema]
    return schema


class _SchemalessReader:
    """fastavro's public single-record reader. It re-parses (and compares) its schemas on every
    call, which is most of its cost per trade message."""

    def prepare(self, schema: dict):
        return fastavro.parse_schema(schema, _write_hint=False)

    def read(self, body: io.BytesIO, prepared) -> dict:
        return fastavro.schemaless_reader(body, prepared, None)


class _ParsedSchemaReader(_SchemalessReader):
    """fastavro's record reader given a schema parsed once, so no call re-parses it. It is not a
    public API, so it is used only after reading a probe record exactly as the public reader does."""

    _OPTIONS = {
        "return_record_name": False,
        "return_record_name_override": False,
        "handle_unicode_errors": "strict",
        "return_named_type": False,
        "return_named_type_override": False,
    }

    def __init__(self):
        # Here, not at the top: a fastavro without this private reader falls back to the public one
        from fastavro._read import _default_named_schemas, _read_data, parse_schema

        self._named, self._read_data, self._parse = _default_named_schemas, _read_data, parse_schema

    def prepare(self, schema: dict):
        named = self._named()
        return self._parse(schema, named["writer"]), named

    def read(self, body: io.BytesIO, prepared) -> dict:
        return self._read_data(body, prepared[0], prepared[1], None, self._OPTIONS)


def _record_reader() -> _SchemalessReader:
    probe_schema = {
        "type": "record",
        "name": "probe",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "s", "type": ["null", "string"]},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        ],
    }
    record = {"n": -3, "s": "é", "t": 1_700_000_000_000_001}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(probe_schema), record)
    try:
        fast = _ParsedSchemaReader()
        public = _SchemalessReader()
        same = fast.read(io.BytesIO(body.getvalue()), fast.prepare(probe_schema)) == public.read(
            io.BytesIO(body.getvalue()), public.prepare(probe_schema)
        )
        return fast if same else public
    except Exception:  # noqa: BLE001 - another fastavro: its public reader is always right
        return _SchemalessReader()


_RECORD_READER = _record_reader()


@lru_cache(maxsize=None)
def _shipped_header(name: str) -> bytes:
    """Computing a fingerprint costs far more than decoding a message: a shipped schema's header
    is computed once."""
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


def decode(message: bytes, reader_schema, store: SchemaStore, timestamps_as_micros: bool = False) -> dict:
    """Decode a message written with any schema in ``store`` into ``reader_schema`` (a shipped
    schema's name, or a parsed schema); ``timestamps_as_micros`` gives timestamps as integers."""
    if message is None:  # a Kafka tombstone: a key with no value
        raise WireFormatError("not_single_object_encoded", "the message has no value (a Kafka tombstone)")
    if len(message) < HEADER_SIZE or message[:2] != MAGIC:
        raise WireFormatError(
            "not_single_object_encoded", "the message does not start with the Avro single-object header"
        )
    key = message[2:HEADER_SIZE]
    writer = store.writer_schema(key)
    if writer is None:
        raise WireFormatError("unknown_schema", f"no schema with fingerprint {key.hex()} is known")
    body = io.BytesIO(message[HEADER_SIZE:])
    try:
        if isinstance(reader_schema, str) and key == _shipped_header(reader_schema)[len(MAGIC) :]:
            record = store.read_as_written(key, body, timestamps_as_micros)  # the usual message: nothing to resolve
        else:
            reader = parsed_avro_schema(reader_schema) if isinstance(reader_schema, str) else reader_schema
            record = fastavro.schemaless_reader(body, writer, reader)
            if timestamps_as_micros:
                record = {k: datetime_to_micros(v) if isinstance(v, datetime) else v for k, v in record.items()}
    except fastavro.read.SchemaResolutionError as error:
        raise WireFormatError(
            "incompatible_schema", f"cannot read this writer schema as the reader schema: {error}"
        ) from None
    except (EOFError, ValueError, IndexError, UnicodeDecodeError, TypeError, OverflowError) as error:
        raise WireFormatError(
            "malformed", f"the Avro body cannot be decoded: {type(error).__name__}: {error}"
        ) from None
    if body.tell() != len(message) - HEADER_SIZE:
        raise WireFormatError("malformed", "bytes left over after the Avro record")
    return record
