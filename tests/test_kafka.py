"""Bars to a real local Kafka broker in the Avro wire format; the broker's own CLI lifecycle."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq

from io_connectors.avro_wire import SchemaStore, decode
from tests.support.commands import run_backfill
from tests.support.kafka import read_topic
from tests.support.paths import BUNDLED, CLI


def test_bars_to_kafka_equal_parquet(kafka_bootstrap, tmp_path):
    out = tmp_path / "out"
    result = run_backfill(
        "binance-aggtrades",
        BUNDLED,
        out,
        "--fill-gaps",
        "--sink",
        "kafka",
        "--kafka",
        kafka_bootstrap,
        "--kafka-bars-topic",
        "bars_test",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parquet = pq.read_table(out / "bars").to_pylist()
    messages = read_topic(kafka_bootstrap, "bars_test", len(parquet))
    assert len(messages) == len(parquet) == 2880
    store = SchemaStore.shipped()
    decoded = [decode(m.value(), "bar", store) for m in messages]
    assert all(m.key() == b"binance:XRPETH" for m in messages)
    assert messages[0].timestamp()[1] == int(decoded[0]["window_end"].timestamp() * 1000)

    def window_and_filled(bar):
        return bar["window_start"], bar["is_filled"]

    for k, p in zip(sorted(decoded, key=window_and_filled), sorted(parquet, key=window_and_filled)):
        assert (k["open"], k["close"], k["volume"], k["trade_count"], k["is_filled"]) == (
            p["open"],
            p["close"],
            p["volume"],
            p["trade_count"],
            p["is_filled"],
        )


def test_kafka_up_status_down(tmp_path):
    work = str(tmp_path / "kafka")
    up = subprocess.run([CLI, "kafka", "up", "--dir", work], capture_output=True, text=True, timeout=180)
    assert up.returncode == 0 and "bootstrap 127.0.0.1:" in up.stdout, up.stdout + up.stderr
    assert subprocess.run([CLI, "kafka", "status", "--dir", work], capture_output=True).returncode == 0
    assert subprocess.run([CLI, "kafka", "down", "--dir", work], capture_output=True).returncode == 0
    assert subprocess.run([CLI, "kafka", "status", "--dir", work], capture_output=True).returncode == 1


def test_kafka_up_restarts_a_stopped_broker_with_its_data(tmp_path):
    from confluent_kafka import Producer

    from runners.local_kafka import create_topics

    work = str(tmp_path / "kafka")

    def cryptobeam_kafka(action):
        return subprocess.run([CLI, "kafka", action, "--dir", work], capture_output=True, text=True, timeout=180)

    first = cryptobeam_kafka("up")
    assert first.returncode == 0, first.stdout + first.stderr
    bootstrap = (tmp_path / "kafka" / "bootstrap").read_text()
    try:
        create_topics(bootstrap, {"kept": 1})
        producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        producer.produce("kept", b"still here")
        assert producer.flush(30) == 0
        assert cryptobeam_kafka("down").returncode == 0
        again = cryptobeam_kafka("up")
        assert again.returncode == 0 and f"bootstrap {bootstrap}" in again.stdout, again.stdout + again.stderr
        twice = cryptobeam_kafka("up")
        assert twice.returncode == 2 and "already running" in twice.stderr and "Traceback" not in twice.stderr
        assert [m.value() for m in read_topic(bootstrap, "kept", 1, timeout_s=30)] == [b"still here"]
    finally:
        cryptobeam_kafka("down")


def test_kafka_sink_needs_a_broker_address(tmp_path):
    result = run_backfill("binance-aggtrades", BUNDLED, tmp_path / "out", "--sink", "kafka")
    assert result.returncode == 2 and "--kafka" in result.stderr


def test_cluster_ids_never_look_like_options():
    from runners.local_kafka import _cluster_id

    ids = [_cluster_id() for _ in range(5000)]  # about 78 would start with '-' if unguarded
    assert not any(i.startswith("-") for i in ids) and len(set(ids)) == len(ids)


def test_the_bars_sink_waits_out_a_broker_that_is_away(tmp_path):
    """A bundle's bars wait for a broker that is away 25 s (through more than one of the sink's
    10 s waits; it once failed the run after 60 s) and reach the topic once it is back."""
    import threading
    import time

    from io_connectors.kafka_sink import _ProduceBars
    from runners.local_kafka import LocalKafka, create_topics

    broker = LocalKafka.start(tmp_path / "kafka")
    try:
        create_topics(broker.bootstrap, {"bars": 1})
        sink = _ProduceBars(broker.bootstrap, "bars")
        sink.setup()
        sink.start_bundle()
        broker.stop()
        t0 = 1_704_067_200_000_000
        bars = [
            {
                "exchange": "binance",
                "symbol": "BTCUSDT",
                "interval": "1m",
                "window_start": t0 + i * 60_000_000,
                "window_end": t0 + (i + 1) * 60_000_000,
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
                "quote_volume": 1.0,
                "vwap": 1.0,
                "trade_count": 1,
                "buy_volume": 1.0,
                "sell_volume": 0.0,
                "first_trade_id": str(i),
                "last_trade_id": str(i),
                "duplicate_count": 0,
                "is_filled": False,
                "pane_timing": "ON_TIME",
                "pane_index": 0,
                "is_final": True,
            }
            for i in range(3)
        ]
        for bar in bars:
            sink.process(bar)
        restart = threading.Timer(25, lambda: LocalKafka.start(tmp_path / "kafka"))
        restart.start()
        started = time.monotonic()
        rejected = list(sink.finish_bundle())
        restart.join()
        assert time.monotonic() - started > 20 and rejected == []
        assert len(read_topic(broker.bootstrap, "bars", 3, timeout_s=30)) == 3
        sink.teardown()
        del sink  # its producer, which would go on logging failed connects to the stopped broker
    finally:
        LocalKafka.attach(tmp_path / "kafka").stop()
