"""Prometheus metrics of ``cryptobeam collect`` and ``cryptobeam stream`` (``--metrics-port PORT``).

``METRICS`` names every metric either command exports, with its type, labels and meaning: the
alert rules (``monitoring/alerts.yml``), the dashboard and ``docs/metrics.md`` use these names
only (``tests/test_monitoring.py`` checks). Names follow Prometheus' conventions: the
``cryptobeam_`` prefix, then the command, base units (seconds) and ``_total`` on counters.

Both commands serve a custom ``prometheus_client`` Collector that builds every sample when
Prometheus scrapes, from figures the command keeps anyway, so nothing is counted twice:

- **collect** runs in this process: ``CollectMetrics`` reads the feeds' live counters
  (``CollectorCounters``, the per-symbol figures of ``FeedCollector``, the producer's errors).
- **stream** runs on a runner, maybe on other machines: the launcher polls the job's Beam
  metrics every few seconds (``StreamMetricsPoller``), with each partition's consumer lag asked
  of Kafka, and ``StreamMetrics`` serves the last snapshot. That works on every runner that
  reports metrics while a job runs. Beam's portable runners (Prism, Flink) answer
  ``result.metrics()`` once and keep that answer for good, so the poller asks their job
  service afresh each time instead (``live_metric_results``), leaving ``result.metrics()``
  untouched for the run's final accounting.

Beam has no histogram metric, so the stream counts written panes into the fixed buckets of
``PANE_LATENCY_BUCKETS_S`` with one Beam counter per bucket (``beam_pipelines.outputs``), which
``StreamMetrics`` turns back into a Prometheus histogram.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability.portable_runner import PortableMetrics
from confluent_kafka import TopicPartition
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from io_connectors.kafka_source import kafka_consumer, topic_partitions
from io_connectors.metric_results import (
    NAMESPACE,
    PANE_LATENCY_BUCKET,
    PANE_LATENCY_BUCKETS_S,
    PANE_LATENCY_SUM_MS,
    WATERMARK_PASSED_US,
    counter_totals,
    metrics_in,
    pane_latency_counter,
    value_of,
)

log = logging.getLogger("cryptobeam.metrics")


class Metric(NamedTuple):
    name: str
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


def _collect(name, kind, labels, help_text) -> Metric:
    return Metric(f"cryptobeam_collect_{name}", kind, labels, help_text)


def _stream(name, kind, labels, help_text) -> Metric:
    return Metric(f"cryptobeam_stream_{name}", kind, labels, help_text)


EXCHANGE, SYMBOL = ("exchange",), ("exchange", "symbol")

COUNTER_FIELDS = {
    # CollectorCounters field -> metric, per exchange
    "frames": _collect("frames_received_total", "counter", EXCHANGE, "Websocket frames received."),
    "published": _collect(
        "trades_published_total",
        "counter",
        EXCHANGE,
        "Trades published to Kafka (live and fetched over REST), duplicates excluded.",
    ),
    "duplicates": _collect("duplicates_total", "counter", EXCHANGE, "Trades seen before, dropped."),
    "gaps_detected": _collect("gaps_detected_total", "counter", EXCHANGE, "Jumps in consecutive trade ids."),
    "gap_trades_fetched": _collect(
        "gap_trades_fetched_total", "counter", EXCHANGE, "Missed trades fetched over REST to fill gaps."
    ),
    "gaps_unfilled": _collect("gaps_unfilled_total", "counter", EXCHANGE, "Gaps REST could not fill entirely."),
    "trades_unfilled": _collect(
        "gap_trades_missing_total", "counter", EXCHANGE, "Trade ids of unfilled gaps that are still missing."
    ),
    "reconnects": _collect(
        "reconnects_total", "counter", EXCHANGE, "Websocket connections made again after the first."
    ),
    "stale_reconnects": _collect(
        "stale_reconnects_total",
        "counter",
        EXCHANGE,
        "Reconnects forced by the staleness watchdog (no frame for --stale-after).",
    ),
    "connect_failures": _collect("connect_failures_total", "counter", EXCHANGE, "Connection attempts that failed."),
    "rest_retries": _collect("rest_retries_total", "counter", EXCHANGE, "REST requests retried."),
    "status_records": _collect("status_records_total", "counter", EXCHANGE, "feed_status records published."),
}
COLLECT_TRADES_RECEIVED = _collect(
    "trades_received_total", "counter", SYMBOL, "Trades in websocket frames, duplicates included."
)
COLLECT_DEAD_LETTERS = _collect(
    "dead_letters_total", "counter", ("exchange", "reason"), "Frames that could not be read, dead-lettered, by reason."
)
COLLECT_NEWEST_TRADE = _collect(
    "newest_trade_timestamp_seconds",
    "gauge",
    SYMBOL,
    "Event time of the newest trade published, unix seconds; staleness is time() - it.",
)
COLLECT_CONNECTED = _collect("feed_connected", "gauge", EXCHANGE, "1 while the feed's websocket is subscribed, else 0.")
COLLECT_PRODUCE_ERRORS = _collect(
    "kafka_produce_errors_total",
    "counter",
    (),
    "Messages Kafka reported as not delivered (each is lost unless the run is repeated).",
)
COLLECT_PENDING = _collect(
    "kafka_pending_messages", "gauge", (), "Messages handed to the producer and not yet acknowledged by Kafka."
)

STREAM_COUNTERS = {
    # Beam counter (name, or prefix of name.<label value>) -> metric
    "records_in": _stream("trades_read_total", "counter", (), "Records read from the trades topic."),
    "duplicates": _stream(
        "duplicates_total", "counter", (), "Trades read again (same exchange, symbol, id), not counted twice."
    ),
    "dead_letters.": _stream(
        "dead_letters_total", "counter", ("reason",), "Records that became dead letters, by reason."
    ),
    "table_rows.": _stream("bar_rows_written_total", "counter", ("table",), "Bar panes written, per table of bars."),
    "table_trades.": _stream("trades_in_final_bars_total", "counter", ("table",), "Trades in final bars, per table."),
    "venue_windows.": _stream(
        "venue_windows_total", "counter", ("venue",), "Consolidated bars: final windows per venue (exchange:symbol)."
    ),
    "venue_excluded.": _stream(
        "venue_exclusions_total",
        "counter",
        ("venue", "reason"),
        "Consolidated bars: final windows a venue was excluded from, by reason.",
    ),
    "venue_missing_ids.": _stream(
        "venue_missing_trade_ids_total", "counter", ("venue",), "Consolidated bars: trade ids found missing per venue."
    ),
    "kafka_offset_commits": _stream(
        "kafka_offset_commits_total", "counter", (), "Offset commits of the consumer group."
    ),
    "kafka_broker_outages": _stream(
        "kafka_broker_outages_total", "counter", (), "Times the Kafka broker was unavailable."
    ),
    "sink_rejections": _stream("sink_rejections_total", "counter", (), "Bar rows a sink rejected (dead-lettered)."),
}
STREAM_PANE_LATENCY = _stream(
    "pane_latency_seconds",
    "histogram",
    ("table",),
    "Wall-clock time a bar pane is written minus its window end (early panes count as 0).",
)
STREAM_WATERMARK = _stream(
    "watermark_timestamp_seconds",
    "gauge",
    (),
    "A lower bound of the stream's watermark, unix seconds: the newest time-bar window end "
    "whose on-time or late pane was written.",
)
STREAM_WATERMARK_LAG = _stream(
    "watermark_lag_seconds", "gauge", (), "Now minus cryptobeam_stream_watermark_timestamp_seconds."
)
STREAM_CONSUMER_LAG = _stream(
    "consumer_lag_messages",
    "gauge",
    ("topic", "partition"),
    "Messages past the consumer group's committed offset (the partition's start offset "
    "before the first commit): what a restart would read.",
)
STREAM_SNAPSHOT_TIME = _stream(
    "metrics_snapshot_timestamp_seconds", "gauge", (), "When the launcher last read the job's metrics, unix seconds."
)

METRICS: tuple[Metric, ...] = (
    *COUNTER_FIELDS.values(),
    COLLECT_TRADES_RECEIVED,
    COLLECT_DEAD_LETTERS,
    COLLECT_NEWEST_TRADE,
    COLLECT_CONNECTED,
    COLLECT_PRODUCE_ERRORS,
    COLLECT_PENDING,
    *STREAM_COUNTERS.values(),
    STREAM_PANE_LATENCY,
    STREAM_WATERMARK,
    STREAM_WATERMARK_LAG,
    STREAM_CONSUMER_LAG,
    STREAM_SNAPSHOT_TIME,
)


def exported_series() -> set[str]:
    """Every series name a query can use: a histogram is its ``_bucket``, ``_count`` and ``_sum``."""
    names = set()
    for metric in METRICS:
        names |= (
            {f"{metric.name}{s}" for s in ("_bucket", "_count", "_sum")}
            if metric.kind == "histogram"
            else {metric.name}
        )
    return names


class MetricsPortInUse(RuntimeError):
    """The port given to --metrics-port is taken."""


@dataclass
class MetricsServer:
    """A running metrics endpoint; ``close()`` frees its port."""

    port: int
    registry: CollectorRegistry
    _server: object = None
    _thread: threading.Thread | None = None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(port: int, collector: Collector, address: str = "0.0.0.0") -> MetricsServer:
    """Serve ``collector`` alone (no process or platform metrics of another library) on ``port``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise MetricsPortInUse(f"--metrics-port {port}: the port is already in use") from None
        raise MetricsPortInUse(f"--metrics-port {port}: cannot listen: {error.strerror or error}") from None
    return MetricsServer(port, registry, server, thread)


def _family(metric: Metric, labels: tuple[str, ...] | None = None):
    labels = metric.labels if labels is None else labels
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=labels)
    return HistogramMetricFamily(metric.name, metric.help, labels=labels)


# --- collect ---------------------------------------------------------------------------------


class CollectMetrics(Collector):
    """A live collector's figures at scrape time (``io_connectors.collectors.collector.Collector``)."""

    def __init__(self, collector):
        self._collector = collector

    def collect(self):
        feeds = self._collector.feeds
        for field_name, metric in COUNTER_FIELDS.items():
            family = _family(metric)
            for feed in feeds:
                family.add_metric([feed.name], getattr(feed.counters, field_name))
            yield family
        received, newest = _family(COLLECT_TRADES_RECEIVED), _family(COLLECT_NEWEST_TRADE)
        dead, connected = _family(COLLECT_DEAD_LETTERS), _family(COLLECT_CONNECTED)
        for feed in feeds:
            for symbol, count in dict(feed.received_by_symbol).items():
                received.add_metric([feed.name, symbol], count)
            for symbol, micros in dict(feed.newest_trade_us).items():
                newest.add_metric([feed.name, symbol], micros / 1e6)
            for reason, count in dict(feed.dead_letters_by_reason).items():
                dead.add_metric([feed.name, reason], count)
            connected.add_metric([feed.name], 1 if feed.connected else 0)
        yield from (received, newest, dead, connected)
        output = self._collector.output
        errors, pending = _family(COLLECT_PRODUCE_ERRORS), _family(COLLECT_PENDING)
        errors.add_metric([], output.failed)
        pending.add_metric([], output.pending())
        yield from (errors, pending)


# --- stream ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSnapshot:
    """What the launcher last learned about the running job."""

    counters: dict[str, int] = field(default_factory=dict)
    watermark_us: int | None = None
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    taken_at: float | None = None


def live_metric_results(result):
    """The job's metrics now. Beam's ``PipelineResult`` of a portable runner (Prism, Flink,
    portable) caches its first ``metrics()`` answer for good, so its job service is asked
    directly; other runners' ``metrics()`` ask afresh (Dataflow) or are live (in-process)."""
    job_service, job_id = getattr(result, "_job_service", None), getattr(result, "_job_id", None)
    if job_service is None or job_id is None:
        return result.metrics()
    return PortableMetrics(job_service.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=job_id)))


def beam_figures(metric_results, namespace: str = NAMESPACE) -> tuple[dict[str, int], int | None]:
    """(each counter summed over steps, the watermark bound in µs or None), as the run's
    accounting reads them (``io_connectors.metric_results``)."""
    found = metrics_in(metric_results, namespace)
    watermark = None
    for distribution in found["distributions"]:
        value = value_of(distribution)
        if distribution.key.metric.name == WATERMARK_PASSED_US and value is not None and value.count:
            watermark = max(watermark or value.max, value.max)
    return counter_totals(found["counters"]), watermark


def consumer_lag(consumer, topic: str, timeout: float = 5.0) -> dict[tuple[str, int], int]:
    """Per partition: the high watermark minus the group's committed offset (the earliest offset
    before a first commit, where a stream of this group starts)."""
    partitions = topic_partitions(consumer, topic, timeout)
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    lag = {}
    for tp in committed:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout, cached=False)
        lag[(topic, tp.partition)] = max(0, high - (tp.offset if tp.offset >= 0 else low))
    return lag


class StreamMetricsPoller:
    """Every ``every_s``, in a daemon thread: the job's Beam metrics and the consumer lag, into
    ``snapshot``. A failed poll keeps the previous snapshot (its time says how old it is)."""

    def __init__(self, result, read_config, every_s: float = 2.0, clock: Callable[[], float] = time.time):
        self._result, self._read, self._every_s, self._clock = result, read_config, every_s, clock
        self.snapshot = StreamSnapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer = None

    def start(self) -> "StreamMetricsPoller":
        self._thread = threading.Thread(target=self._run, name="cryptobeam-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                self.poll_once()
                failures = 0
            except Exception as error:  # a runner or broker hiccup must not end the stream
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("metrics poll failed (%d in a row): %s: %s", failures, type(error).__name__, error)
            if self._stop.wait(self._every_s):
                return

    def poll_once(self) -> StreamSnapshot:
        counters, watermark = beam_figures(live_metric_results(self._result))
        lag = self.snapshot.consumer_lag
        try:
            if self._consumer is None:
                self._consumer = kafka_consumer(self._read)
            lag = consumer_lag(self._consumer, self._read.topic)
        except Exception as error:  # the broker away: the job's figures are still worth serving
            log.debug("consumer lag unavailable: %s", error)
        self.snapshot = StreamSnapshot(counters, watermark, lag, self._clock())
        return self.snapshot


class StreamMetrics(Collector):
    """The poller's last snapshot as Prometheus metrics."""

    def __init__(self, snapshot: Callable[[], StreamSnapshot], clock: Callable[[], float] = time.time):
        self._snapshot, self._clock = snapshot, clock

    def collect(self):
        snapshot = self._snapshot()
        yield from _stream_counters(snapshot.counters)
        yield _pane_latency(snapshot.counters)
        watermark, lag = _family(STREAM_WATERMARK), _family(STREAM_WATERMARK_LAG)
        if snapshot.watermark_us is not None:
            watermark.add_metric([], snapshot.watermark_us / 1e6)
            lag.add_metric([], max(0.0, self._clock() - snapshot.watermark_us / 1e6))
        consumer = _family(STREAM_CONSUMER_LAG)
        for (topic, partition), messages in sorted(snapshot.consumer_lag.items()):
            consumer.add_metric([topic, str(partition)], messages)
        taken = _family(STREAM_SNAPSHOT_TIME)
        if snapshot.taken_at is not None:
            taken.add_metric([], snapshot.taken_at)
        yield from (watermark, lag, consumer, taken)


def _stream_counters(counters: dict[str, int]):
    for source, metric in STREAM_COUNTERS.items():
        family = _family(metric)
        if not source.endswith("."):
            family.add_metric([], counters.get(source, 0))
        else:
            for name, value in sorted(counters.items()):
                if name.startswith(source):
                    key = name[len(source) :]
                    values = key.rsplit("|", 1) if len(metric.labels) == 2 else [key]
                    if len(values) == len(metric.labels):
                        family.add_metric(values, value)
        yield family


def _pane_latency(counters: dict[str, int]):
    """The per-bucket Beam counters as one cumulative histogram per table."""
    per_table: dict[str, dict[str, int]] = {}
    for name, value in counters.items():
        if name.startswith(PANE_LATENCY_BUCKET):
            table, _, bound = name[len(PANE_LATENCY_BUCKET) :].rpartition("|")
            per_table.setdefault(table, {})[bound] = value
    family = _family(STREAM_PANE_LATENCY)
    for table, counts in sorted(per_table.items()):
        buckets, total = [], 0
        for bound in (*PANE_LATENCY_BUCKETS_S, None):
            total += counts.get(pane_latency_counter(table, bound).rpartition("|")[2], 0)
            buckets.append((floatToGoString(math.inf if bound is None else bound), total))
        family.add_metric([table], buckets, sum_value=counters.get(f"{PANE_LATENCY_SUM_MS}{table}", 0) / 1000)
    return family


class StreamMetricsEndpoint:
    """The stream's endpoint: serving from before the job starts (so a taken port stops the run
    before it begins), then the snapshots of a poller of the job once it runs."""

    def __init__(self, port: int, poll_every_s: float = 2.0):
        self._poll_every_s = poll_every_s
        self._poller: StreamMetricsPoller | None = None
        self._server = serve_metrics(port, StreamMetrics(self._snapshot))

    def _snapshot(self) -> StreamSnapshot:
        return self._poller.snapshot if self._poller is not None else StreamSnapshot()

    def watch(self, result, read_config) -> None:
        self._poller = StreamMetricsPoller(result, read_config, self._poll_every_s).start()

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self._server.close()
