"""Records from Kafka messages in the Avro single-object wire format (``io_connectors.avro_wire``):
``decode_messages`` for any record type, and the trades and feed status records built from them.

A raw batch holds the messages' values with their offsets; ``source`` names the topic and
partition. Messages that cannot be decoded become dead letters with the wire format's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from io_connectors.avro_wire import SchemaStore, WireFormatError, decode
from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter
from transforms.feed_status import make_status_batch
from transforms.trade_batch import TRADE_FIELDS, make_trade_batch

_STORE: SchemaStore | None = None


@dataclass
class DecodedMessages:
    """A batch's messages decoded: the records, with each one's offset and bytes, and a dead letter
    for each message that could not be decoded."""

    records: list[dict] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)

    def column(self, name: str) -> list:
        return [record.get(name) for record in self.records]


def decode_messages(raw: RawBatch, schema: str, store: SchemaStore | None = None) -> DecodedMessages:
    """The batch's messages as records of ``schema`` (e.g. ``trade``), by the shipped schemas unless
    ``store`` is given; times as microseconds."""
    global _STORE
    if store is None:
        _STORE = _STORE or SchemaStore.shipped()
        store = _STORE
    decoded = DecodedMessages()
    for message, offset in zip(raw.payloads.to_pylist(), raw.line_numbers.tolist()):
        try:
            record = decode(message, schema, store, timestamps_as_micros=True)
        except WireFormatError as error:
            decoded.dead_letters.append(dead_letter(error.reason, str(error), "parse", message, raw.source, offset))
            continue
        decoded.records.append(record)
        decoded.offsets.append(offset)
        decoded.payloads.append(message)
    return decoded


def parse_avro_messages(raw: RawBatch, store: SchemaStore | None = None, **_overrides):
    decoded = decode_messages(raw, "trade", store)
    columns = {name: decoded.column(name) for name in TRADE_FIELDS}
    trades = make_trade_batch(**columns, source=raw.source, source_offset=decoded.offsets, payload=decoded.payloads)
    return trades, decoded.dead_letters


def parse_feed_status_messages(raw: RawBatch, store: SchemaStore | None = None, **_overrides):
    """Collectors' connection-state records (``schemas/feed_status.avsc``) from Kafka messages."""
    decoded = decode_messages(raw, "feed_status", store)
    return make_status_batch(decoded.records, raw.source, decoded.offsets, decoded.payloads), decoded.dead_letters
