"""Kafka source: a pure-Python splittable DoFn on confluent-kafka.

Why not Beam's ``ReadFromKafka``: it is a cross-language transform whose Java SDK harness runs in
Docker by default, and there is no Docker engine on our laptops, CI machines or Flink hosts. A
Python SDF runs wherever the Python workers run (LOOPBACK, PROCESS or EXTERNAL) on Prism, Flink
and Dataflow alike.

- **Restrictions:** one per partition, an offset range ``[start, ∞)``. A self-checkpoint after
  each short read hands the rest back to the runner, which may resume it anywhere.
- **Watermarks:** per partition, the newest message timestamp minus ``watermark_delay``
  (messages carry the trade's event time). A partition that is caught up and idle follows the
  topic's newest timestamp instead, so it never holds the pipeline's watermark back.
- **Resume:** each partition starts at the consumer group's committed offset. Commits are made
  by ``io_connectors.kafka_progress`` only once the bars before them are written, with the
  event time they cover in the commit metadata; messages behind that point are re-read on
  restart and, being older than it, dead-lettered as ``before_resume_point`` rather than
  counted into a bar twice.
- **Drain:** ``request_drain()`` (the ``stream`` command's Ctrl-C) or ``stop_when_idle`` ends
  every partition's read; the watermark then reaches the end of time and every window fires
  its final pane. ``stop_when_idle`` is one condition over the whole topic, checked against the
  broker so that readers in any worker agree: every partition is read up to its high watermark
  by this run (readers record their positions in the group ``<group>.read-positions``) and no
  partition's high watermark has moved for that long while the broker answered. Time the broker
  was away is not silence: producers hold their messages until it is back.
- **Broker outages:** a broker call that fails (the broker is away, restarting, electing) is
  retried with capped exponential backoff until the broker answers, counted in
  ``kafka_broker_outages`` and ``kafka_broker_retries``; only a fatal client error fails the read.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from io_connectors.raw_batch import RawBatch
from io_connectors.raw_batch_coder import RawBatchCoder
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter
from transforms.dead_letter_counts import count_dead_letter

UNBOUNDED_END = sys.maxsize
PROGRESS_TAG = "read_progress"
CLOCK_SKEW_US = 60_000_000
"""A watermark never runs more than this ahead of the wall clock: one message stamped in the
future must not make every later trade too late."""
_DRAIN = threading.Event()
_TOPICS_READ: set[str] = set()
"""Runs (``run_id``) whose topic a reader of this process found read and silent: the other
readers of this process stop at once rather than at their next check."""
OUTAGE_BACKOFF_S = (0.5, 10.0)
"""First and longest wait between two tries of a broker call while the broker is away."""
_broker_away_until = float("-inf")
"""The last moment (``time.monotonic()``) a broker call of this process failed or first answered
again after failing: ``stop_when_idle`` counts silence only from then."""


def _note_broker_away() -> None:
    global _broker_away_until
    _broker_away_until = time.monotonic()


def request_drain() -> None:
    """Stop reading at the next poll in every reader of this process (LOOPBACK workers)."""
    _DRAIN.set()


def reset_drain() -> None:
    _DRAIN.clear()


@dataclass(frozen=True)
class KafkaReadConfig:
    bootstrap: str
    topic: str = "trades"
    group_id: str = "cryptobeam-stream"
    watermark_delay_us: int = 5_000_000
    """Bounded disorder: how far behind the newest timestamp a partition's watermark stays."""
    idle_after_s: float = 5.0
    """A caught-up partition with no message for this long follows the topic's newest timestamp."""
    stop_when_idle_s: float | None = None
    """Finish the read once every partition has been read up to its end by this run and no
    partition has received a message for this long (tests, demos, reprocessing a backlog)."""
    max_batch: int = 5000
    poll_timeout_s: float = 0.05
    """Longest wait of one poll for a full batch."""
    idle_retry_s: float = 0.2
    """A read that found nothing is resumed after this long."""
    read_budget_s: float = 0.1
    """Longest single read while the partition keeps up, before handing the rest back to the
    runner: short reads pass trades on sooner, which keeps EARLY panes' latency low."""
    backlog_read_budget_s: float = 0.5
    """Longest single read once a poll comes back full, i.e. behind a backlog: long reads keep
    bundles few and large, which is what lets the runner catch up."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """This run, as the read positions recorded for ``stop_when_idle`` name it: positions a
    previous run recorded do not count."""
    counted_as: str = ""
    """Prefix of the records counted here, for a topic of other records than trades (``feed_status.``)."""
    idle_follows_clock: bool = False
    """A caught-up idle partition follows the wall clock rather than the topic's newest timestamp:
    for a topic of rare records stamped by the clock (collectors' connection states), whose newest
    record may be hours old while trades flow."""

    @property
    def positions_group(self) -> str:
        return f"{self.group_id}.read-positions"


@dataclass(frozen=True)
class PartitionStart:
    """Where one partition's read begins: its first offset, and the event time (µs) the previous
    run had written everything before (0 on a first run)."""

    topic: str
    partition: int
    offset: int
    resume_us: int = 0


def kafka_consumer(config: KafkaReadConfig, **extra):
    """A consumer in the read's group that never commits on its own and starts at the earliest
    offset; ``extra`` adds or overrides settings."""
    return Consumer(
        {
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "log_level": 3,
            **extra,
        }
    )


def topic_partitions(consumer, topic: str, timeout: float) -> list[int]:
    """The topic's partition numbers, or KafkaException if the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaException(f"topic {topic!r} does not exist")
    return sorted(metadata.partitions)


def partition_starts(config: KafkaReadConfig, timeout: float = 30) -> list[PartitionStart]:
    """Each partition's starting point: the group's committed offset (and the event time stored
    with it), else the partition's earliest offset."""
    consumer = kafka_consumer(config)
    try:
        partitions = topic_partitions(consumer, config.topic, timeout)
        committed = retrying_coordinator_call(
            lambda: consumer.committed([TopicPartition(config.topic, p) for p in partitions], timeout=timeout), timeout
        )
        starts = []
        for tp in committed:
            if tp.offset >= 0:
                starts.append(PartitionStart(config.topic, tp.partition, tp.offset, _resume_us(tp.metadata)))
            else:
                low, _high = consumer.get_watermark_offsets(TopicPartition(config.topic, tp.partition), timeout=timeout)
                starts.append(PartitionStart(config.topic, tp.partition, low))
        return starts
    finally:
        consumer.close()


def retrying_coordinator_call(call, timeout: float):
    """Group-coordinator calls fail while Kafka creates its offsets topic; they are retriable."""
    coordinator_busy = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as error:
            kafka_error = error.args[0]
            retriable = kafka_error.retriable() or kafka_error.code() in coordinator_busy
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def through_outages(call, what: str):
    """``call()``, waiting out a broker that is away: a failing call is tried again with capped
    exponential backoff until it succeeds. Returns None if a drain is requested while waiting
    (the caller then does without the answer); a fatal client error is raised."""
    delay, first_failure = OUTAGE_BACKOFF_S[0], None
    while True:
        try:
            result = call()
        except KafkaException as error:
            if _is_fatal(error):
                raise
            _note_broker_away()
            if first_failure is None:
                first_failure = time.monotonic()
                beam.metrics.Metrics.counter("cryptobeam", "kafka_broker_outages").inc()
            beam.metrics.Metrics.counter("cryptobeam", "kafka_broker_retries").inc()
            logging.getLogger(__name__).warning(
                "Kafka broker unavailable for %s (%.0f s so far, next try in %.1f s): %s",
                what,
                time.monotonic() - first_failure,
                delay,
                error,
            )
            if _DRAIN.wait(delay):
                return None
            delay = min(delay * 2, OUTAGE_BACKOFF_S[1])
            continue
        if first_failure is not None:
            _note_broker_away()
            logging.getLogger(__name__).warning(
                "Kafka broker answers %s again after %.1f s", what, time.monotonic() - first_failure
            )
        return result


def _is_fatal(error) -> bool:
    kafka_error = error.args[0] if error.args else None
    return bool(getattr(kafka_error, "fatal", lambda: False)())


def _resume_us(metadata: str | None) -> int:
    try:
        return int(json.loads(metadata or "{}").get("resume_us", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


class _UnboundedOffsetTracker(OffsetRestrictionTracker):
    """Offsets of one partition. Only checkpoints split it: a fractional split of ``[n, ∞)``
    would hand a reader an offset no message has, and a partition is read in order anyway."""

    def is_bounded(self):
        return self._range.stop != UNBOUNDED_END

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        return super().try_split(0)


class _PartitionOffsets(RestrictionProvider):
    def initial_restriction(self, start: PartitionStart):
        return OffsetRange(start.offset, UNBOUNDED_END)

    def create_tracker(self, restriction):
        return _UnboundedOffsetTracker(restriction)

    def restriction_size(self, start, restriction):
        return 1  # one partition, one unit of work; never split up front

    def truncate(self, start, restriction):
        return None  # draining: nothing more is read


class _PartitionReader:
    """One consumer assigned to one partition, remembering where it is."""

    def __init__(self, config: KafkaReadConfig, start: PartitionStart):
        self._config, self._start = config, start
        self._consumer = kafka_consumer(config, **{"fetch.wait.max.ms": 50, "queued.min.messages": 20000})
        self._tp = TopicPartition(start.topic, start.partition)
        self.position: int | None = None
        self.last_message_at = time.monotonic()
        self.next_idle_advance = 0.0
        self.next_topic_check = 0.0
        self._topic_highs: dict[int, int] | None = None
        self.topic_silent_since = time.monotonic()
        self._positions = None
        self._recorded_position: int | None = None

    def seek(self, offset: int) -> None:
        if self.position != offset:
            self._consumer.assign([TopicPartition(self._start.topic, self._start.partition, offset)])
            self.position = offset
            self.last_message_at = time.monotonic()  # picked up again: silence is counted from now

    def poll(self):
        messages = self._consumer.consume(self._config.max_batch, self._config.poll_timeout_s)
        good = [m for m in messages if m.error() is None]
        if good:
            self.position = good[-1].offset() + 1
            self.last_message_at = time.monotonic()
        return good, [m for m in messages if m.error() is not None]

    def caught_up(self) -> bool:
        _low, high = self._consumer.get_watermark_offsets(self._tp, timeout=5, cached=False)
        return self.position is not None and self.position >= high

    def observe_topic(self) -> dict[int, int]:
        """Every partition's high watermark now; notes when any last moved (``topic_silent_since``)."""
        topic = self._start.topic
        highs = {
            p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            for p in topic_partitions(self._consumer, topic, 5)
        }
        if highs != self._topic_highs:  # the first look, too: what came before it is unknown
            self._topic_highs, self.topic_silent_since = highs, time.monotonic()
        return highs

    def topic_read_by_this_run(self, highs: dict[int, int]) -> bool:
        """Records this partition's position for the other readers, then whether every partition's
        recorded position (this run's) has reached its high watermark in ``highs``."""
        if self._positions is None:
            self._positions = kafka_consumer(self._config, **{"group.id": self._config.positions_group})
        if self.position is not None and self.position != self._recorded_position:
            mark = TopicPartition(self._start.topic, self._start.partition, self.position, self._config.run_id)
            retrying_coordinator_call(lambda: self._positions.commit(offsets=[mark], asynchronous=False), 30)
            self._recorded_position = self.position
        recorded = retrying_coordinator_call(
            lambda: self._positions.committed([TopicPartition(self._start.topic, p) for p in sorted(highs)], timeout=5),
            30,
        )
        return all(tp.metadata == self._config.run_id and tp.offset >= highs[tp.partition] for tp in recorded)

    def topic_newest_timestamp_ms(self) -> int | None:
        """The newest message timestamp over all partitions of the topic: where an idle
        partition's watermark may safely move."""
        partitions = topic_partitions(self._consumer, self._start.topic, 5)
        probe = kafka_consumer(self._config)
        newest = None
        try:
            for p in partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(self._start.topic, p), timeout=5)
                if high <= low:
                    continue
                probe.assign([TopicPartition(self._start.topic, p, high - 1)])
                for message in probe.consume(1, 2.0):
                    if message.error() is None:
                        newest = max(newest or 0, message.timestamp()[1])
        finally:
            probe.close()
        return newest

    def close(self) -> None:
        self._consumer.close()
        if self._positions is not None:
            self._positions.close()


@beam.DoFn.unbounded_per_element()
class _ReadPartitionFn(beam.DoFn):
    def __init__(self, config: KafkaReadConfig):
        self._config = config
        self._read = beam.metrics.Metrics.counter("cryptobeam", "kafka_messages_read")
        # Records that never reach the parser count as read here; the parser counts the rest.
        self._records_in = beam.metrics.Metrics.counter("cryptobeam", f"{config.counted_as}records_in")

    def setup(self):
        self._readers: dict[tuple[str, int], _PartitionReader] = {}

    def teardown(self):
        for reader in getattr(self, "_readers", {}).values():
            reader.close()

    def _reader(self, start: PartitionStart) -> _PartitionReader:
        key = (start.topic, start.partition)
        if key not in self._readers:
            self._readers[key] = _PartitionReader(self._config, start)
        return self._readers[key]

    def process(
        self,
        start: PartitionStart,
        tracker=beam.DoFn.RestrictionParam(_PartitionOffsets()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        reader = self._reader(start)
        reader.seek(tracker.current_restriction().start)
        source = f"kafka:{start.topic}/{start.partition}"
        started = time.monotonic()
        deadline = started + self._config.read_budget_s
        while True:
            if _DRAIN.is_set() or self._config.run_id in _TOPICS_READ:
                tracker.try_claim(UNBOUNDED_END)  # the read is complete: the watermark may reach the end
                return
            messages, errors = reader.poll()
            for error in errors:
                if error.error().fatal():
                    raise RuntimeError(f"Kafka consumer for {source} failed: {error.error()}")
                # Client events (a broker down, a timeout) are not records: librdkafka retries them.
                _note_broker_away()
                logging.getLogger(__name__).warning("%s: %s", source, error.error())
            claimed = []
            for message in messages:
                if not tracker.try_claim(message.offset()):
                    break  # the runner split the rest off: it will be read elsewhere
                claimed.append(message)
            if claimed:
                yield from self._emit(claimed, start, source, watermark)
                if len(messages) == self._config.max_batch:  # behind a backlog: read longer
                    deadline = max(deadline, started + self._config.backlog_read_budget_s)
            elif not messages and self._idle(reader, watermark):
                tracker.try_claim(UNBOUNDED_END)
                return
            if len(claimed) < len(messages):
                return
            if time.monotonic() >= deadline:
                tracker.defer_remainder(Duration(seconds=0 if claimed else self._config.idle_retry_s))
                return

    def _emit(self, messages, start: PartitionStart, source: str, watermark):
        self._read.inc(len(messages))
        times_ms = np.fromiter((m.timestamp()[1] for m in messages), dtype=np.int64, count=len(messages))
        resumed = times_ms * 1000 < start.resume_us
        for i in np.flatnonzero(resumed).tolist():
            message = messages[i]
            self._records_in.inc()
            count_dead_letter("cryptobeam", "before_resume_point")
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                dead_letter(
                    "before_resume_point",
                    f"timestamp {int(times_ms[i])} ms is before {start.resume_us} us, up to which the previous run "
                    "had written its bars; this record may already be counted there",
                    "source",
                    message.value(),
                    source,
                    message.offset(),
                ),
            )
        kept = [m for m, old in zip(messages, resumed.tolist()) if not old]
        if kept:
            kept_ms = times_ms[~resumed]
            yield beam.window.TimestampedValue(
                RawBatch(
                    source=source,
                    payloads=[m.value() for m in kept],
                    line_numbers=np.array([m.offset() for m in kept], dtype=np.int64),
                ),
                Timestamp(micros=int(kept_ms.min()) * 1000),
            )
        self._advance(watermark, int(times_ms.max()) * 1000 - self._config.watermark_delay_us)
        # What this partition has read: offset commits never pass it (io_connectors.kafka_progress).
        yield beam.pvalue.TaggedOutput(PROGRESS_TAG, (start.partition, messages[-1].offset() + 1))

    @staticmethod
    def _advance(watermark, micros: int) -> None:
        micros = min(micros, int(time.time() * 1_000_000) + CLOCK_SKEW_US)
        current = watermark.current_watermark()
        if current is None or micros > current.micros:
            watermark.set_watermark(Timestamp(micros=micros))

    def _idle(self, reader: _PartitionReader, watermark) -> bool:
        """No message this poll. Returns True when the read should end (``stop_when_idle``)."""
        stop_s = self._config.stop_when_idle_s
        if stop_s is not None and self._topic_read(reader, stop_s):
            _TOPICS_READ.add(self._config.run_id)  # this process's other readers stop too
            return True
        silent = time.monotonic() - reader.last_message_at
        if silent < self._config.idle_after_s or not through_outages(reader.caught_up, "a partition's end offset"):
            return False
        if time.monotonic() >= reader.next_idle_advance:
            newest = through_outages(reader.topic_newest_timestamp_ms, "the topic's newest timestamp")
            if self._config.idle_follows_clock:
                newest = max(newest or 0, int(time.time() * 1000))
            if newest is not None:
                self._advance(watermark, newest * 1000 - self._config.watermark_delay_us)
            reader.next_idle_advance = time.monotonic() + self._config.idle_after_s / 2
        return False

    @staticmethod
    def _topic_read(reader: _PartitionReader, stop_s: float) -> bool:
        """``stop_when_idle``: every partition read to its end by this run, none written to for
        ``stop_s``. Checked now and then, since each check asks the broker about every partition."""
        now = time.monotonic()
        if now < reader.next_topic_check:
            return False
        reader.next_topic_check = now + min(1.0, stop_s / 4)
        highs = through_outages(reader.observe_topic, "the topic's end offsets")
        silent_since = max(reader.topic_silent_since, reader.last_message_at, _broker_away_until)
        if highs is None or time.monotonic() - silent_since < stop_s:
            return False
        return bool(through_outages(lambda: reader.topic_read_by_this_run(highs), "this run's read positions"))


class _DiscoverPartitions(beam.DoFn):
    """At run time, on a worker: the topic's partitions and where each starts. Building the
    pipeline needs no Kafka, so it can be planned, templated or submitted from anywhere."""

    def __init__(self, config: KafkaReadConfig):
        self._config = config

    def process(self, _impulse):
        yield from through_outages(lambda: partition_starts(self._config), "the topic's partitions") or []


class ReadKafkaTrades(beam.PTransform):
    """Kafka messages -> timestamped ``RawBatch``es (values and offsets) for ``TradesToBars``.

    Returns outputs ``raw``, ``dead_letter`` (``before_resume_point``) and ``read_progress``
    ((partition, next offset) as reading goes on)."""

    def __init__(self, config: KafkaReadConfig, label=None):
        super().__init__(label)
        self._config = config

    def expand(self, pipeline):
        return (
            pipeline
            | "Start" >> beam.Impulse()
            | "Partitions" >> beam.ParDo(_DiscoverPartitions(self._config))
            | "ReadPartitions"
            >> beam.ParDo(_ReadPartitionFn(self._config))
            .with_output_types(RawBatchCoder.value_type)
            .with_outputs(DEAD_LETTER_TAG, PROGRESS_TAG, main="raw")
        )
