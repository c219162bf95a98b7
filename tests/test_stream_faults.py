"""A stream under hostile input and faults: poison messages, a broker that goes away and comes
back, a partition whose data comes late. Every record read ends in a final bar or a dead letter,
the stream stops only once the whole topic is read, and its summary matches what is on disk.

Everything is real: Kafka brokers, Prism, the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
from confluent_kafka import Producer

from io_connectors.avro_wire import encode
from io_connectors.bar_reader import final_bars, read_bars
from runners.local_kafka import LocalKafka, create_topics
from tests.support.outputs import summary
from tests.support.paths import ROOT
from tests.support.streams import finish, new_topic, start_stream, wait_for_bar_files


def _trade(i: int, symbol: str = "BTCUSDT") -> bytes:
    return encode(
        {
            "exchange": "binance",
            "symbol": symbol,
            "base": None,
            "quote": None,
            "trade_id": str(i),
            "price": 100.0 + i % 7,
            "amount": 1.0,
            "side": "buy",
            "event_time": int(time.time() * 1_000_000),
            "receive_time": None,
        },
        "trade",
    )


class _Publisher:
    """Sends messages and counts what the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic, self.acked, self.failed = topic, 0, 0
        # A producer tries a broker that went away again after up to reconnect.backoff.max.ms
        # (10 s by default); --stop-when-idle in these tests is shorter than that.
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "log_level": 0, "reconnect.backoff.max.ms": 500}
        )
        self._next_id = 0

    def _delivered(self, error, _message):
        if error is None:
            self.acked += 1
        else:
            self.failed += 1

    def send(self, value: bytes | None, partition: int = 0) -> None:
        self._producer.produce(self.topic, value, partition=partition, on_delivery=self._delivered)
        self._producer.poll(0)

    def trades(self, n: int, partition: int = 0, symbol: str = "BTCUSDT") -> None:
        for _ in range(n):
            self.send(_trade(self._next_id, symbol), partition)
            self._next_id += 1

    def flush(self) -> None:
        assert self._producer.flush(120) == 0 and self.failed == 0, "the broker did not take every message"


def _trickle(
    publisher: _Publisher, stop: threading.Event, partition: int = 0, every_s: float = 0.3
) -> threading.Thread:
    """A trade every ``every_s`` until ``stop``, so the topic is never silent for long."""

    def run():
        while not stop.wait(every_s):
            publisher.trades(1, partition)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _assert_summary_is_what_is_on_disk(out: Path) -> dict:
    """The summary's written figures are the run's files' contents, to the row."""
    run = summary(out)
    assert run["reconciled"], run["problems"]
    bars = read_bars(str(out)).to_pylist()
    final_traded = [b for b in bars if b["is_final"] and not b["is_filled"]]
    assert run["trades_in_final_bars"] == sum(b["trade_count"] for b in final_traded)
    assert run["bar_rows_written"] == len(bars)
    assert run["bar_files_written"] == len(list((out / "bars").rglob("*.parquet")))
    dead = out / "dead_letter"
    written_dead = ds.dataset(str(dead), format="parquet").count_rows() if dead.exists() else 0
    assert run["dead_letter_rows_written"] == written_dead
    return run


def test_poison_messages_become_dead_letters_or_bars_and_the_stream_finishes(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    publisher = _Publisher(kafka_bootstrap, topic)
    publisher.trades(20)
    publisher.send(None)  # a tombstone
    publisher.send(b"\xc3\x01 not a fingerprint")  # a header and nothing valid after it
    publisher.trades(1, symbol="S" * 300)  # valid Avro; its symbol is longer than a file name may be
    publisher.trades(20)
    publisher.flush()
    out = tmp_path / "stream"
    finish(start_stream(kafka_bootstrap, topic, out, "--stop-when-idle", "2s"), out, timeout=180)
    run = _assert_summary_is_what_is_on_disk(out)
    assert run["records_in"] == 43 and run["kafka_broker_outages"] == 0
    assert run["dead_letters_by_reason"] == {"not_single_object_encoded": 1, "unknown_schema": 1}
    tombstone = ds.dataset(str(out / "dead_letter" / "reason=not_single_object_encoded"), format="parquet").to_table()
    assert tombstone.column("payload_bytes").to_pylist() == [None] and tombstone.column(
        "source_offset"
    ).to_pylist() == [20]
    by_symbol = {}
    for bar in final_bars(str(out)):
        by_symbol[bar["symbol"]] = by_symbol.get(bar["symbol"], 0) + bar["trade_count"]
    assert by_symbol == {"BTCUSDT": 40, "S" * 300: 1}


def test_stop_when_idle_waits_for_every_partition_and_reads_a_late_one(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 3)
    publisher = _Publisher(kafka_bootstrap, topic)
    publisher.trades(10, partition=1)
    publisher.trades(10, partition=2)
    publisher.flush()
    out = tmp_path / "stream"
    stream = start_stream(kafka_bootstrap, topic, out, "--early", "1s", "--stop-when-idle", "3s")
    stop = threading.Event()
    trickle = _trickle(publisher, stop, partition=1)
    wait_for_bar_files(stream, out, 120)  # reading: partitions 0 and 2 have been silent since the start
    time.sleep(5)  # longer than --stop-when-idle: a silent partition alone must not end the read
    publisher.trades(10, partition=0)
    time.sleep(1)
    stop.set()
    trickle.join()
    publisher.flush()
    finish(stream, out, timeout=180)
    run = _assert_summary_is_what_is_on_disk(out)
    assert run["records_in"] == publisher.acked, "the stream stopped before reading the whole topic"
    assert run["kafka_broker_outages"] == 0
    assert sum(b["trade_count"] for b in final_bars(str(out))) == publisher.acked


def test_a_broker_outage_is_waited_out_and_the_stream_resumes(tmp_path):
    broker = LocalKafka.start(tmp_path / "kafka")
    try:
        bootstrap = broker.bootstrap
        topic = "trades"
        create_topics(bootstrap, {topic: 1})
        publisher = _Publisher(bootstrap, topic)
        publisher.trades(10)
        publisher.flush()
        out = tmp_path / "stream"
        # The broker is away longer than --stop-when-idle: that time is not silence.
        stream = start_stream(bootstrap, topic, out, "--early", "1s", "--stop-when-idle", "4s")
        stop = threading.Event()
        trickle = _trickle(publisher, stop)  # the producer holds what it cannot send while the broker is away
        wait_for_bar_files(stream, out, 120)
        broker.stop()
        time.sleep(6)
        assert stream.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        broker = LocalKafka.start(tmp_path / "kafka")  # the same broker, with its data, on the same port
        assert broker.bootstrap == bootstrap
        time.sleep(2)
        stop.set()
        trickle.join()
        publisher.flush()
        finish(stream, out, timeout=240)
        run = _assert_summary_is_what_is_on_disk(out)
        assert run["records_in"] == publisher.acked, "the stream stopped before the messages held in the outage"
        assert run["kafka_broker_outages"] >= 1 and run["kafka_broker_retries"] >= run["kafka_broker_outages"]
    finally:
        broker.stop()


_SHORT_JOB_DEADLINE = """
import sys
from runners.profiles import RunnerProfile
options = RunnerProfile.options
RunnerProfile.options = lambda self, extra_args=None, streaming=False: options(
    self, [*(extra_args or []), "--job_server_timeout=8"], streaming)
from beam_pipelines.cli import entry_point
sys.argv = ["cryptobeam", *sys.argv[1:]]
entry_point()
"""


def test_a_stream_outlives_the_job_servers_deadline(kafka_bootstrap, tmp_path):
    """Beam follows a job over a stream with a deadline of --job_server_timeout (300 s by default);
    the deadline is shortened here so that a stream of seconds outlives it."""
    topic = new_topic(kafka_bootstrap, 1)
    publisher = _Publisher(kafka_bootstrap, topic)
    publisher.trades(10)
    publisher.flush()
    out = tmp_path / "stream"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _SHORT_JOB_DEADLINE,
            "stream",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            topic,
            "--group",
            topic,
            "--out",
            str(out),
            "--no-progress",
            "--stop-when-idle",
            "12s",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(out)["elapsed_seconds"] > 8 and summary(out)["records_in"] == 10


def test_time_the_broker_was_away_is_not_silence(monkeypatch):
    """Producers hold their messages while the broker is away, so a topic whose end offsets did
    not move over an outage is not idle: ``stop_when_idle`` counts silence from the broker's return."""
    from confluent_kafka import KafkaError, KafkaException

    from io_connectors import kafka_source

    monkeypatch.setattr(kafka_source, "OUTAGE_BACKOFF_S", (0.01, 0.01))

    class Reader:
        """Read to the end a minute ago; the broker fails the next end-offset call."""

        def __init__(self):
            self.topic_silent_since = self.last_message_at = time.monotonic() - 60
            self.next_topic_check, self.failures = 0.0, 1

        def observe_topic(self):
            if self.failures:
                self.failures -= 1
                raise KafkaException(KafkaError(KafkaError._TRANSPORT))
            return {0: 10}

        def topic_read_by_this_run(self, highs):
            return True

    reader = Reader()
    assert not kafka_source._ReadPartitionFn._topic_read(reader, stop_s=0.3), "stopped right after the outage"
    time.sleep(0.35)
    reader.next_topic_check = 0.0
    assert kafka_source._ReadPartitionFn._topic_read(reader, stop_s=0.3), "silent long enough once the broker is back"
