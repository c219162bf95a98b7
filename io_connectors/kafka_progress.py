"""Commit Kafka offsets only for what is written, so a restarted stream has no gap.

A window's bars are final, and written, once the watermark downstream of the file writers
passes the window's expiry (end + allowed lateness + the runner's slack). A timer there walks
event time; each time it fires at ``t`` the resume point is the last interval boundary whose
windows all expired at least one interval before ``t``. For each partition the commit is Kafka's
earliest offset whose timestamp reaches the resume point (``offsets_for_times``): every message
before it is older, so its window is on disk. The resume point travels in the commit's metadata;
the next run dead-letters re-read messages older than it (``before_resume_point``) instead of
counting them into a bar again.

Information bars (tick, volume, dollar) count from each UTC day's first trade, and a restarted
run has none of the previous run's state: it can rebuild a day's bars only from that day's start.
So when a run builds them, the resume point is the UTC day start at or before the interval
boundary (``resume_point_us``): the next run re-reads the day and rebuilds its time bars too, which
``io_connectors.bar_reader.final_bars`` reads as the newest file's.

A commit never passes what the reader has read of a partition (its ``read_progress``): after a
drain, or for a partition that lags, the messages not yet read are read by the next run. A commit
the broker cannot take now is tried again until it can (``kafka_source.through_outages``).
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from confluent_kafka import KafkaException, TopicPartition

from io_connectors.kafka_source import KafkaReadConfig, kafka_consumer, retrying_coordinator_call, through_outages
from transforms.bar_kinds import DAY_MICROS
from transforms.bar_spec import BarSpec

_LOG = logging.getLogger(__name__)
_KEY = "progress"


def resume_point_us(through_us: int, spec: BarSpec) -> int:
    """Where a restarted run may resume when every bar up to ``through_us`` is written: the interval
    boundary at or before it, or, when the run builds information bars, the UTC day start at or
    before that (their counts restart each day, and the next run starts with no state), as when it
    builds consolidated bars (their judgement of venues runs through each day)."""
    boundary = int(spec.interval.window_start_micros(through_us))
    return boundary // DAY_MICROS * DAY_MICROS if spec.day_by_day else boundary


def commit_resume_point(
    consumer, config: KafkaReadConfig, read_up_to: dict[int, int], resume_us: int
) -> dict[int, int]:
    """Commit, per partition read so far, the first offset at or after ``resume_us``, but never
    past what was read (``read_up_to``: partition -> next offset); returns the offsets."""
    partitions = sorted(read_up_to)
    found = consumer.offsets_for_times(
        [TopicPartition(config.topic, p, resume_us // 1000) for p in partitions], timeout=10
    )
    for tp in found:
        if tp.error is not None:
            raise KafkaException(tp.error)
    metadata = json.dumps({"resume_us": resume_us})
    # No message at or after the point (offset -1): every message up to what was read is older.
    offsets = {
        tp.partition: min(tp.offset, read_up_to[tp.partition]) if tp.offset >= 0 else read_up_to[tp.partition]
        for tp in found
    }
    retrying_coordinator_call(
        lambda: consumer.commit(
            offsets=[TopicPartition(config.topic, p, o, metadata) for p, o in offsets.items()], asynchronous=False
        ),
        30,
    )
    return offsets


class _CommitProgressFn(beam.DoFn):
    """One key. State: the latest window end written, and the next walk step the timer waits for."""

    LATEST_WRITTEN = ReadModifyWriteStateSpec("latest_written", VarIntCoder())
    READ_UP_TO = ReadModifyWriteStateSpec("read_up_to", PickleCoder())
    NEXT_STEP = ReadModifyWriteStateSpec("next_step", VarIntCoder())
    COMMITTED = ReadModifyWriteStateSpec("committed", VarIntCoder())
    STEP = TimerSpec("step", TimeDomain.WATERMARK)
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, config: KafkaReadConfig, spec: BarSpec, every_us: int):
        self._config, self._spec = config, spec
        self._every_us = every_us
        # Windows ending at a point are on disk once the watermark is this far past it.
        self._hold_back_us = spec.allowed_lateness_micros + spec.runner_slack_micros + 2 * spec.interval.micros
        self._commits = beam.metrics.Metrics.counter("cryptobeam", "kafka_offset_commits")

    def setup(self):
        self._consumer = kafka_consumer(self._config)

    def teardown(self):
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.close()

    def process(
        self,
        element,
        latest=beam.DoFn.StateParam(LATEST_WRITTEN),
        read_up_to=beam.DoFn.StateParam(READ_UP_TO),
        next_step=beam.DoFn.StateParam(NEXT_STEP),
        step_timer=beam.DoFn.TimerParam(STEP),
        end_timer=beam.DoFn.TimerParam(END_OF_INPUT),
    ):
        _, (kind, value) = element
        if kind == "read":
            partition, next_offset = value
            positions = read_up_to.read() or {}
            if next_offset > positions.get(partition, -1):
                read_up_to.write({**positions, partition: next_offset})
            return
        through_us = value
        if through_us is None:
            return
        if through_us > (latest.read() or 0):
            latest.write(through_us)
        pending = next_step.read()
        if pending is None:
            first = through_us + self._hold_back_us
            next_step.write(first)
            step_timer.set(Timestamp(micros=first))
            end_timer.set(GlobalWindow().max_timestamp())

    @on_timer(STEP)
    def on_step(
        self,
        fired_at=beam.DoFn.TimestampParam,
        latest=beam.DoFn.StateParam(LATEST_WRITTEN),
        read_up_to=beam.DoFn.StateParam(READ_UP_TO),
        next_step=beam.DoFn.StateParam(NEXT_STEP),
        committed=beam.DoFn.StateParam(COMMITTED),
        step_timer=beam.DoFn.TimerParam(STEP),
    ):
        written = latest.read() or 0
        point = resume_point_us(min(fired_at.micros - self._hold_back_us, written), self._spec)
        self._commit(point, read_up_to.read() or {}, committed)
        following = fired_at.micros + self._every_us
        if following - self._hold_back_us > written:
            next_step.clear()  # caught up with what is written: the next written file restarts the walk
            return
        next_step.write(following)
        step_timer.set(Timestamp(micros=following))

    @on_timer(END_OF_INPUT)
    def on_end_of_input(
        self,
        latest=beam.DoFn.StateParam(LATEST_WRITTEN),
        read_up_to=beam.DoFn.StateParam(READ_UP_TO),
        committed=beam.DoFn.StateParam(COMMITTED),
    ):
        """Drained: every window is final and written, up to what each partition had read."""
        if latest.read():
            self._commit(resume_point_us(latest.read(), self._spec), read_up_to.read() or {}, committed)

    def _commit(self, point_us: int, read_up_to: dict[int, int], committed) -> None:
        if point_us <= (committed.read() or 0) or not read_up_to:
            return
        offsets = through_outages(
            lambda: commit_resume_point(self._consumer, self._config, read_up_to, point_us), "an offset commit"
        )
        if offsets is None:  # drained while the broker was away: the next run resumes from the previous commit
            _LOG.warning(
                "%s: resume point %d us not committed, the broker was unavailable", self._config.group_id, point_us
            )
            return
        committed.write(point_us)
        self._commits.inc()
        _LOG.info("committed %s resume point %d us: offsets %s", self._config.group_id, point_us, offsets)


class CommitProgress(beam.PTransform):
    """(written files, read progress) -> Kafka offset commits for the consumer group (see module docstring)."""

    def __init__(self, config: KafkaReadConfig, spec: BarSpec, every_s: float = 300, label=None):
        super().__init__(label)
        self._fn = _CommitProgressFn(config, spec, max(int(every_s * 1_000_000), spec.interval.micros))

    def expand(self, inputs):
        written_files, read_progress = inputs
        written = written_files | "Written" >> beam.Map(lambda file: (_KEY, ("written", file.through_us)))
        read = read_progress | "Read" >> beam.Map(lambda progress: (_KEY, ("read", progress)))
        return (written, read) | "Both" >> beam.Flatten() | "Commit" >> beam.ParDo(self._fn)
