"""Kafka wire format: Avro single-object encoding, schema evolution both ways, dead letters for
what cannot be read; and the Avro file sink."""

from __future__ import annotations

import copy
import io

import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.avro_wire import SchemaStore, WireFormatError, decode, encode, schema_fingerprint
from io_connectors.formats.kafka_avro import parse_avro_messages
from io_connectors.raw_batch import RawBatch
from schemas import avro_schema, parsed_avro_schema
from tests.support.commands import run_backfill
from tests.support.helpers import T0, run_trades_to_bars
from tests.support.paths import BUNDLED
from transforms.bar_spec import BarSpec

TRADE = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "base": "BTC",
    "quote": "USDT",
    "trade_id": "7",
    "price": 93000.5,
    "amount": 0.25,
    "side": "sell",
    "event_time": T0 + 5,
    "receive_time": None,
}


def trade_v2() -> dict:
    """A newer writer schema: one optional field added, with a default."""
    schema = copy.deepcopy(avro_schema("trade"))
    schema["fields"].append({"name": "venue_sequence", "type": ["null", "long"], "default": None})
    return schema


def test_round_trip_and_header():
    message = encode(TRADE, "trade")
    assert message[:2] == b"\xc3\x01" and message[2:10] == schema_fingerprint(parsed_avro_schema("trade"))
    decoded = decode(message, "trade", SchemaStore.shipped())
    assert decoded["trade_id"] == "7" and decoded["price"] == 93000.5


def test_fingerprint_matches_the_avro_spec_vector():
    # The Avro specification's CRC-64-AVRO of the schema "int" is 0x8f5c393f1ad57572, written little endian.
    assert schema_fingerprint(fastavro.parse_schema("int")) == bytes.fromhex("8f5c393f1ad57572")[::-1]


def test_newer_writer_read_by_older_reader():
    store = SchemaStore.shipped()
    newer = fastavro.parse_schema(trade_v2(), _write_hint=False)
    store.add(trade_v2())
    message = encode({**TRADE, "venue_sequence": 123}, newer)
    decoded = decode(message, "trade", store)
    assert "venue_sequence" not in decoded and decoded["amount"] == 0.25


def test_older_writer_read_by_newer_reader():
    store = SchemaStore.shipped()
    message = encode(TRADE, "trade")
    decoded = decode(message, fastavro.parse_schema(trade_v2(), _write_hint=False), store)
    assert decoded["venue_sequence"] is None and decoded["symbol"] == "BTCUSDT"


def test_incompatible_unknown_and_malformed_messages_raise_with_a_reason():
    store = SchemaStore.shipped()
    strict = copy.deepcopy(avro_schema("trade"))
    strict["fields"].append({"name": "required_without_default", "type": "long"})
    with pytest.raises(WireFormatError) as error:
        decode(encode(TRADE, "trade"), fastavro.parse_schema(strict, _write_hint=False), store)
    assert error.value.reason == "incompatible_schema"
    with pytest.raises(WireFormatError) as error:
        decode(
            encode({**TRADE, "venue_sequence": 1}, fastavro.parse_schema(trade_v2(), _write_hint=False)), "trade", store
        )
    assert error.value.reason == "unknown_schema"  # v2 was never added to this store
    with pytest.raises(WireFormatError) as error:
        decode(b'{"json": true}', "trade", store)
    assert error.value.reason == "not_single_object_encoded"
    with pytest.raises(WireFormatError) as error:
        decode(encode(TRADE, "trade")[:-6], "trade", store)
    assert error.value.reason == "malformed"


trade_record = st.fixed_dictionaries(
    {
        "exchange": st.text(max_size=8),
        "symbol": st.text(max_size=12),
        "base": st.none() | st.text(max_size=5),
        "quote": st.none() | st.text(max_size=5),
        "trade_id": st.text(max_size=20),
        "price": st.floats(allow_nan=False),
        "amount": st.floats(allow_nan=False),
        "side": st.sampled_from(["buy", "sell", "unknown"]),
        # Within the years 1-9999, so that fastavro's reference can make datetimes of them.
        "event_time": st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),
        "receive_time": st.none() | st.integers(0, 253_402_300_799_999_999),
    }
)


@settings(max_examples=200, deadline=None)
@given(trade_record)
def test_decoding_agrees_with_fastavros_public_reader(record):
    """The store's reader (a schema parsed once) against fastavro's own schemaless_reader."""
    message = encode(record, "trade")
    reference = fastavro.schemaless_reader(io.BytesIO(message[10:]), parsed_avro_schema("trade"), None)
    assert decode(message, "trade", SchemaStore.shipped()) == reference
    as_micros = decode(message, "trade", SchemaStore.shipped(), timestamps_as_micros=True)
    assert as_micros == {**reference, "event_time": record["event_time"], "receive_time": record["receive_time"]}


def test_timestamps_as_micros_also_when_schemas_are_resolved():
    store = SchemaStore.shipped()
    older_writer = encode({**TRADE, "receive_time": T0 + 9}, "trade")
    decoded = decode(
        older_writer, fastavro.parse_schema(trade_v2(), _write_hint=False), store, timestamps_as_micros=True
    )
    assert (decoded["event_time"], decoded["receive_time"], decoded["venue_sequence"]) == (T0 + 5, T0 + 9, None)


def test_a_time_past_year_9999_is_still_a_number_for_the_trade_parser():
    message = encode({**TRADE, "event_time": 2**62}, "trade")
    assert decode(message, "trade", SchemaStore.shipped(), timestamps_as_micros=True)["event_time"] == 2**62
    with pytest.raises(WireFormatError) as error:  # no datetime can hold it
        decode(message, "trade", SchemaStore.shipped())
    assert error.value.reason == "malformed"


def test_bytes_after_the_record_are_malformed():
    with pytest.raises(WireFormatError) as error:
        decode(encode(TRADE, "trade") + b"\x00", "trade", SchemaStore.shipped())
    assert error.value.reason == "malformed"


def test_kafka_messages_through_the_one_code_path():
    good = [encode({**TRADE, "trade_id": str(i), "event_time": T0 + i * 1_000_000}, "trade") for i in range(5)]
    messages = good + [good[0], b"garbage", good[1][:12]]
    raw = RawBatch(source="kafka:trades/0", payloads=messages, line_numbers=np.arange(100, 100 + len(messages)))
    bars, dead, counters = run_trades_to_bars([raw], BarSpec.of("1m"), parse_avro_messages)
    assert sum(b["trade_count"] for b in bars) == 5 and counters["duplicates"] == 1
    assert sorted((d["reason"], d["source"], d["source_offset"]) for d in dead) == [
        ("malformed", "kafka:trades/0", 107),
        ("not_single_object_encoded", "kafka:trades/0", 106),
    ]
    assert dead[0]["payload_bytes"] in (b"garbage", good[1][:12])


def test_a_kafka_trade_from_year_146000_is_a_dead_letter_not_a_crash():
    messages = [encode(TRADE, "trade"), encode({**TRADE, "trade_id": "8", "event_time": 2**62}, "trade")]
    raw = RawBatch(source="kafka:trades/0", payloads=messages, line_numbers=np.arange(2))
    bars, dead, _ = run_trades_to_bars([raw], BarSpec.of("1m"), parse_avro_messages)
    assert sum(b["trade_count"] for b in bars) == 1
    assert [(d["reason"], d["source_offset"]) for d in dead] == [("timestamp_out_of_range", 1)]


@pytest.mark.pipeline
def test_avro_sink_holds_the_same_bars_as_parquet(tmp_path):
    out = tmp_path / "out"
    result = run_backfill("binance-aggtrades", BUNDLED, out, "--fill-gaps", "--sink", "avro")
    assert result.returncode == 0, result.stderr
    avro_rows = []
    for path in sorted((out / "bars_avro").rglob("*.avro")):
        with open(path, "rb") as handle:
            avro_rows += list(fastavro.reader(handle))
    parquet_rows = pq.read_table(out / "bars").to_pylist()

    def window_and_filled(bar):
        return bar["window_start"], bar["is_filled"]

    assert len(avro_rows) == len(parquet_rows) == 2880
    for a, p in zip(sorted(avro_rows, key=window_and_filled), sorted(parquet_rows, key=window_and_filled)):
        assert (a["open"], a["close"], a["volume"], a["trade_count"], a["symbol"]) == (
            p["open"],
            p["close"],
            p["volume"],
            p["trade_count"],
            p["symbol"],
        )
    bad = run_backfill("binance-aggtrades", BUNDLED, tmp_path / "o2", "--sink", "bigtable")
    assert bad.returncode == 2 and "unknown --sink" in bad.stderr
