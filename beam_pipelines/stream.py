"""The stream pipeline: Kafka trades -> TradesToBars -> every table of bars (time and information
bars) to Parquet files, the Kafka ``bars`` topics and any other sink, then offset commits for what
is written.

Only the source, the sinks and the runner differ from the backfill; ``TradesToBars`` is the same
object with the same settings, which is why a stream's final bars equal a backfill's.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.formats.kafka_avro import parse_avro_messages, parse_feed_status_messages
from io_connectors.instruments import with_canonical_instruments
from io_connectors.kafka_progress import CommitProgress
from io_connectors.kafka_source import KafkaReadConfig, ReadKafkaTrades
from transforms.bar_spec import BarSpec
from transforms.trades_to_bars import TradesToBars


@dataclass(frozen=True)
class StreamConfig:
    read: KafkaReadConfig
    spec: BarSpec
    targets: OutputTargets
    commit_every_s: float = 300
    instruments: str | None = None
    """The user's instruments CSV over the shipped table."""
    status_read: KafkaReadConfig | None = None
    """The collectors' connection states (``--status-topic``), read beside the trades; read from the
    topic's start on each run (its offsets are not committed: keep its retention short)."""


def build_stream(pipeline: beam.Pipeline, config: StreamConfig) -> None:
    read = pipeline | "ReadKafka" >> ReadKafkaTrades(config.read)
    parser = with_canonical_instruments(parse_avro_messages, config.instruments)
    if config.status_read is None:
        results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser)
        read_dead_letters = [read.dead_letter]
    else:
        statuses = pipeline | "ReadFeedStatus" >> ReadKafkaTrades(config.status_read)
        results = {"trades": read.raw, "feed_status": statuses.raw} | "TradesToBars" >> TradesToBars(
            config.spec, parser, status_parser=parse_feed_status_messages
        )
        read_dead_letters = [read.dead_letter, statuses.dead_letter]
    dead_letters = (*read_dead_letters, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    written = write_outputs(results["tables"], dead_letters, config.targets)
    (written, read.read_progress) | "CommitOffsets" >> CommitProgress(config.read, config.spec, config.commit_every_s)
