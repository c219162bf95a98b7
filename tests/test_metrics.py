"""The Prometheus endpoints of ``cryptobeam collect`` and ``cryptobeam stream``, scraped by a real
Prometheus: a collector reads a local fake Binance (a malformed frame, a dropped connection, a
duplicate, a gap filled over REST) into a real Kafka topic that a stream on Prism reads, beside a
garbage message and a duplicate produced into the topic directly. What Prometheus then holds is
checked against what the fake exchange sent, the messages produced, the collector's own summary,
the stream's ``_SUMMARY.json``, its bar files and the consumer group's offsets in Kafka. A port in
use is one error line and exit 2. The translation of Beam counters into metrics is checked on
its own too."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from io_connectors.prometheus_metrics import (
    PANE_LATENCY_BUCKETS_S,
    PANE_LATENCY_SUM_MS,
    StreamMetrics,
    StreamSnapshot,
    pane_latency_counter,
    serve_metrics,
)
from runners.local_kafka import create_topics
from runners.ports import free_port
from tests.support.collectors import kafka_options, refs, topic
from tests.support.fake_exchanges import FakeBinance, FakeBinanceRest, make_trades
from tests.support.kafka import read_topic
from tests.support.paths import CLI, ROOT

PROMETHEUS = "/usr/bin/prometheus"
MINUTE_US = 60_000_000


class Prometheus:
    """A real Prometheus scraping ``targets`` (job -> port on 127.0.0.1) every second."""

    def __init__(self, work: Path, targets: dict[str, int]):
        self.port = free_port()
        config = work / "prometheus.yml"
        config.write_text(
            json.dumps(
                {  # JSON is YAML
                    "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
                    "rule_files": [str(ROOT / "monitoring" / "alerts.yml")],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                        for job, port in targets.items()
                    ],
                }
            )
        )
        self.log = work / "prometheus.log"
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"Prometheus not ready: {self.log.read_text()[-2000:]}")

    def query(self, expression: str) -> dict[tuple, float]:
        """The instant vector of ``expression``: sorted (label, value) pairs -> value."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("job", "instance", "__name__"))): float(
                r["value"][1]
            )
            for r in body["data"]["result"]
        }

    def value(self, expression: str) -> float | None:
        """The single value of ``expression``, or None while it has no sample."""
        found = self.query(expression)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    def wait_for(self, expression: str, expected, timeout_s: float, alive=()) -> float:
        """Until ``expression`` has the value ``expected`` (a number or a predicate)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.value(expression)
            if value is not None and (expected(value) if callable(expected) else value == expected):
                return value
            for process, log in alive:
                assert process.poll() is None, Path(log).read_text()[-3000:]
            assert time.monotonic() < deadline, f"{expression} = {value}, expected {expected}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def labels(**given) -> tuple:
    return tuple(sorted(given.items()))


def one_feed_summary(out: str) -> dict[str, str]:
    return {
        cells[1].strip(): cells[2].strip().replace(",", "")
        for cells in (line.split("│") for line in out.splitlines())
        if len(cells) == 4
    }


def test_prometheus_holds_what_the_collector_and_the_stream_did(kafka_bootstrap, background, tmp_path):
    # Trades a minute and a half old, from 90 s before a whole minute: the window ending 60 s
    # before that minute is the newest the stream's watermark (newest trade - 5 s) has passed.
    minute_us = time.time_ns() // 1000 // MINUTE_US * MINUTE_US
    start_us = minute_us - 90_000_000
    btc, eth = make_trades("BTCUSDT", 1, 200, start_us), make_trades("ETHUSDT", 1, 100, start_us)
    binance = FakeBinance(
        btc + eth,
        [
            [
                ("trades", refs("BTCUSDT", 1, 100) + refs("ETHUSDT", 1, 50)),
                ("raw", "not json"),
                ("trades", refs("BTCUSDT", 111, 150)),
                ("drop",),
            ],  # ids 101..110 missed
            [("trades", refs("BTCUSDT", 150, 200) + refs("ETHUSDT", 51, 100))],
        ],
    )  # 150 again: a duplicate
    rest = FakeBinanceRest(btc + eth, page_size=5)
    ws_url, rest_url = background.start(binance), background.start(rest)
    trades_topic = topic("trades")
    create_topics(kafka_bootstrap, {trades_topic: 1})
    collect_port, stream_port = free_port(), free_port()
    prometheus = Prometheus(tmp_path, {"collect": collect_port, "stream": stream_port})
    out = tmp_path / "stream"
    stream_log = f"{out}.log"
    stream = subprocess.Popen(
        [
            CLI,
            "stream",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            trades_topic,
            "--group",
            trades_topic,
            "--out",
            str(out),
            "--flush-every",
            "1s",
            "--no-progress",
            "--metrics-port",
            str(stream_port),
        ],
        stdout=open(stream_log, "w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    collector = subprocess.Popen(
        [
            CLI,
            "collect",
            "--exchange",
            "binance",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--ws-url",
            ws_url,
            "--rest-url",
            rest_url,
            *kafka_options(kafka_bootstrap, trades_topic),
            "--status-topic",
            topic("status"),
            "--backoff-base",
            "0.1",
            "--backoff-max",
            "0.2",
            "--no-progress",
            "--metrics-port",
            str(collect_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        # --- the collector, against what the fake exchange sent ---
        prometheus.wait_for("sum(cryptobeam_collect_trades_published_total)", 300, 60)
        sent = Counter(symbol for symbol, _ in binance.sent)
        assert (
            prometheus.query("cryptobeam_collect_trades_received_total")
            == {labels(exchange="binance", symbol=s): n for s, n in sent.items()}
            == {labels(exchange="binance", symbol="BTCUSDT"): 191, labels(exchange="binance", symbol="ETHUSDT"): 100}
        )
        figures = {
            name: prometheus.value(f"cryptobeam_collect_{name}")
            for name in (
                "frames_received_total",
                "duplicates_total",
                "reconnects_total",
                "gaps_detected_total",
                "gap_trades_fetched_total",
                "gap_trades_missing_total",
                "kafka_produce_errors_total",
                "feed_connected",
            )
        }
        assert figures == {
            "frames_received_total": len(binance.sent) + 1,
            "duplicates_total": 1,
            "reconnects_total": 1,
            "gaps_detected_total": 1,
            "gap_trades_fetched_total": 10,
            "gap_trades_missing_total": 0,
            "kafka_produce_errors_total": 0,
            "feed_connected": 1,
        }
        assert prometheus.query("cryptobeam_collect_dead_letters_total") == {
            labels(exchange="binance", reason="malformed"): 1
        }
        assert prometheus.query("cryptobeam_collect_newest_trade_timestamp_seconds") == {
            labels(exchange="binance", symbol=s): max(t.time_us for t in trades) / 1e6
            for s, trades in (("BTCUSDT", btc), ("ETHUSDT", eth))
        }
        collector.send_signal(signal.SIGTERM)
        collector_out, collector_err = collector.communicate(timeout=30)
        assert collector.returncode == 0, collector_err
        summary = one_feed_summary(collector_out)
        assert (
            int(summary["trades received"]),
            int(summary["trades published"]),
            int(summary["websocket frames"]),
            int(summary["duplicates dropped"]),
        ) == (291, 300, figures["frames_received_total"], 1)

        # --- the stream: what the collector published, a garbage message and a duplicate ---
        newest_ms = max(t.time_us for t in btc) // 1000
        newest = max(read_topic(kafka_bootstrap, trades_topic, 300, timeout_s=20), key=lambda m: m.timestamp()[1])
        assert newest.timestamp()[1] == newest_ms  # BTCUSDT's last trade, in the window still open
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(trades_topic, value=b"garbage", key=b"binance:BTCUSDT", timestamp=newest_ms)
        producer.produce(trades_topic, value=newest.value(), key=newest.key(), timestamp=newest_ms)
        assert producer.flush(10) == 0
        alive = [(stream, stream_log)]
        prometheus.wait_for("cryptobeam_stream_trades_read_total", 302, 90, alive)
        prometheus.wait_for("cryptobeam_stream_duplicates_total", 1, 20, alive)
        assert prometheus.query("cryptobeam_stream_dead_letters_total") == {
            labels(reason="not_single_object_encoded"): 1
        }
        lag = prometheus.wait_for(
            'cryptobeam_stream_consumer_lag_messages{partition="0"}',
            lambda v: v == group_lag(kafka_bootstrap, trades_topic),
            30,
            alive,
        )
        assert lag == 302  # nothing is committed before the windows expire
        watermark_s = (minute_us - MINUTE_US) / 1e6
        prometheus.wait_for("cryptobeam_stream_watermark_timestamp_seconds", watermark_s, 30, alive)
        queried = time.time()
        lag_s = prometheus.value("cryptobeam_stream_watermark_lag_seconds")
        assert queried - watermark_s - 5 <= lag_s <= queried - watermark_s + 1
        # Every pane written is in the histogram, once the files have caught up with the counters.
        rows = prometheus.wait_for(
            'cryptobeam_stream_pane_latency_seconds_count{table="bars"}',
            lambda v: v == len(pane_latency_bounds(out)),
            30,
            alive,
        )
        assert rows >= 2  # the window before the watermark, of each symbol, and any late pane of it
        check_latency_buckets(prometheus, pane_latency_bounds(out))
        read = prometheus.value("cryptobeam_stream_trades_read_total")

        stream.send_signal(signal.SIGINT)  # drain
        assert stream.wait(timeout=120) == 0, Path(stream_log).read_text()[-3000:]
        run = json.loads((out / "_SUMMARY.json").read_text())
        assert run["reconciled"] and run["records_in"] == read == 302
        assert run["duplicates"] == 1 and run["dead_letters_by_reason"] == {"not_single_object_encoded": 1}
    finally:
        if collector.poll() is None:
            collector.kill()
        try:
            os.killpg(stream.pid, signal.SIGKILL)  # the stream and its Prism, if still there
        except ProcessLookupError:
            pass
        prometheus.stop()


def group_lag(bootstrap: str, name: str) -> int:
    """The high watermark minus the group's committed offset (its start, 0, when none), asked of Kafka here."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": name, "log_level": 3})
    try:
        committed = consumer.committed([TopicPartition(name, 0)], timeout=10)[0].offset
        _low, high = consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=10, cached=False)
        return high - max(committed, 0)
    finally:
        consumer.close()


def pane_latency_bounds(out: Path) -> list[tuple[float, float]]:
    """Per bar pane on disk, (least, most) its write latency can be: the pane is counted before
    the file is written (flushed every second), so its file's time bounds it from above."""
    bounds = []
    for path in ds.dataset(str(out / "bars"), format="parquet").files:
        written = os.path.getmtime(path)
        for window_end in ds.dataset(path, format="parquet").to_table(columns=["window_end"]).column(0).to_pylist():
            most = written - window_end.timestamp()
            bounds.append((most - 5.0, most))
    return bounds


def check_latency_buckets(prometheus: Prometheus, bounds: list[tuple[float, float]]) -> None:
    buckets = {
        dict(k)["le"]: v
        for k, v in prometheus.query('cryptobeam_stream_pane_latency_seconds_bucket{table="bars"}').items()
    }
    assert len(buckets) == len(PANE_LATENCY_BUCKETS_S) + 1
    for le, count in buckets.items():
        limit = math.inf if le == "+Inf" else float(le)
        assert sum(most <= limit for _, most in bounds) <= count <= sum(least <= limit for least, _ in bounds), le
    total = prometheus.value('cryptobeam_stream_pane_latency_seconds_sum{table="bars"}')
    assert sum(least for least, _ in bounds) - 1 <= total <= sum(most for _, most in bounds)


# --- ports and the translation of Beam counters -------------------------------------------------


@pytest.fixture
def taken_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_metrics_port_in_use_is_one_error_line_and_exit_2(kafka_bootstrap, taken_port, tmp_path):
    trades_topic = topic("trades")
    create_topics(kafka_bootstrap, {trades_topic: 1})
    commands = {
        "collect": [
            "collect",
            "--exchange",
            "binance",
            "--symbols",
            "BTCUSDT",
            "--ws-url",
            "ws://127.0.0.1:9",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            trades_topic,
            "--max-seconds",
            "5",
        ],
        "stream": ["stream", "--kafka", kafka_bootstrap, "--topic", trades_topic, "--out", str(tmp_path / "out")],
    }
    for command in commands.values():
        result = subprocess.run(
            [CLI, *command, "--metrics-port", str(taken_port)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"cryptobeam: error: --metrics-port {taken_port}: the port is already in use"
        ), result.stderr
        assert "Traceback" not in result.stderr


def test_a_metrics_port_that_is_no_port_is_a_user_error(capsys):
    from beam_pipelines.collect_run import run_collect
    from tests.support.collectors import collect_args

    assert (
        run_collect(
            collect_args(
                "--exchange", "binance", "--symbols", "BTCUSDT", "--kafka", "127.0.0.1:9", "--metrics-port", "0"
            )
        )
        == 2
    )
    assert capsys.readouterr().err == "cryptobeam: error: --metrics-port 0 is not a port (1-65535)\n"


def test_beam_counters_become_prometheus_metrics():
    counters = {
        "records_in": 120,
        "duplicates": 3,
        "dead_letters.malformed": 2,
        "dead_letters.too_late": 1,
        "table_rows.bars": 7,
        "venue_excluded.binance:BTCUSDT|deviation": 4,
        "venue_excluded.kraken:BTC/USD|disconnected": 1,
        "venue_windows.binance:BTCUSDT": 9,
        pane_latency_counter("bars", 1): 2,
        pane_latency_counter("bars", 60): 3,
        pane_latency_counter("bars", None): 1,
        f"{PANE_LATENCY_SUM_MS}bars": 7_500_000,
    }
    snapshot = StreamSnapshot(
        counters, watermark_us=1_700_000_000_000_000, consumer_lag={("trades", 0): 12}, taken_at=1_700_000_100.0
    )
    port = free_port()
    server = serve_metrics(port, StreamMetrics(lambda: snapshot, clock=lambda: 1_700_000_030.0), "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("cryptobeam_stream_trades_read_total", ())] == 120
    assert samples[("cryptobeam_stream_duplicates_total", ())] == 3
    assert samples[("cryptobeam_stream_dead_letters_total", labels(reason="too_late"))] == 1
    assert (
        samples[("cryptobeam_stream_venue_exclusions_total", labels(venue="binance:BTCUSDT", reason="deviation"))] == 4
    )
    assert (
        samples[("cryptobeam_stream_venue_exclusions_total", labels(venue="kraken:BTC/USD", reason="disconnected"))]
        == 1
    )
    assert samples[("cryptobeam_stream_venue_windows_total", labels(venue="binance:BTCUSDT"))] == 9
    cumulative = {
        le: samples[("cryptobeam_stream_pane_latency_seconds_bucket", labels(le=le, table="bars"))]
        for le in ("1.0", "2.0", "30.0", "60.0", "3600.0", "+Inf")
    }
    assert cumulative == {"1.0": 2, "2.0": 2, "30.0": 2, "60.0": 5, "3600.0": 5, "+Inf": 6}
    assert samples[("cryptobeam_stream_pane_latency_seconds_count", labels(table="bars"))] == 6
    assert samples[("cryptobeam_stream_pane_latency_seconds_sum", labels(table="bars"))] == 7500
    assert samples[("cryptobeam_stream_watermark_timestamp_seconds", ())] == 1_700_000_000
    assert samples[("cryptobeam_stream_watermark_lag_seconds", ())] == 30
    assert samples[("cryptobeam_stream_consumer_lag_messages", labels(partition="0", topic="trades"))] == 12
    assert b"python_gc" not in generate_latest(server.registry)  # only cryptobeam's metrics
