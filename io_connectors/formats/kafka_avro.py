"""Trades from Kafka messages in the Avro single-object wire format (``io_connectors.avro_wire``).

A raw batch holds the messages' values with their offsets; ``source`` names the topic and
partition. Messages that cannot be decoded become dead letters with the wire format's reason.
"""

from __future__ import annotations

from io_connectors.avro_wire import SchemaStore, WireFormatError, decode
from io_connectors.raw_batch import RawBatch
from transforms.dead_letter import dead_letter
from transforms.feed_status import make_status_batch
from transforms.trade_batch import TRADE_FIELDS, make_trade_batch

_STORE: SchemaStore | None = None


def parse_avro_messages(raw: RawBatch, store: SchemaStore | None = None, **_overrides):
    global _STORE
    if store is None:
        _STORE = _STORE or SchemaStore.shipped()
        store = _STORE
    columns = {name: [] for name in TRADE_FIELDS}
    offsets, payloads, dead = [], [], []
    for message, offset in zip(raw.payloads.to_pylist(), raw.line_numbers.tolist()):
        try:
            record = decode(message, "trade", store, timestamps_as_micros=True)
        except WireFormatError as error:
            dead.append(dead_letter(error.reason, str(error), "parse", message, raw.source, offset))
            continue
        for name in TRADE_FIELDS:
            columns[name].append(record.get(name))
        offsets.append(offset)
        payloads.append(message)
    trades = make_trade_batch(**columns, source=raw.source, source_offset=offsets, payload=payloads)
    return trades, dead


def parse_feed_status_messages(raw: RawBatch, store: SchemaStore | None = None, **_overrides):
    """Collectors' connection-state records (``schemas/feed_status.avsc``) from Kafka messages."""
    global _STORE
    if store is None:
        _STORE = _STORE or SchemaStore.shipped()
        store = _STORE
    records, offsets, payloads, dead = [], [], [], []
    for message, offset in zip(raw.payloads.to_pylist(), raw.line_numbers.tolist()):
        try:
            records.append(decode(message, "feed_status", store, timestamps_as_micros=True))
        except WireFormatError as error:
            dead.append(dead_letter(error.reason, str(error), "parse", message, raw.source, offset))
            continue
        offsets.append(offset)
        payloads.append(message)
    return make_status_batch(records, raw.source, offsets, payloads), dead
