"""The stream pipeline: Kafka trades (and, for the on-chain tables, ERC-20 transfers) -> TradesToBars
-> every table of bars (time and information bars, token activity...) to Parquet files, the Kafka
``bars`` topics and any other sink, then offset commits for what is written.

Only the source, the sinks and the runner differ from the backfill; ``TradesToBars`` is the same
object with the same settings, which is why a stream's final bars equal a backfill's.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipelines.outputs import OutputTargets, write_outputs
from io_connectors.formats.kafka_avro import parse_avro_messages, parse_feed_status_messages
from io_connectors.formats.token_transfer_records import parse_token_transfer_messages
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
    transfers_read: KafkaReadConfig | None = None
    """ERC-20 transfers (``collect --chain``'s topic, ``--transfers-topic``), read beside the trades;
    their offsets are committed as the trades' are, once what they went into is written."""
    reads_trades: bool = True
    """False: ``read`` is the transfers' topic and the run reads no trades (on-chain tables only)."""


def build_stream(pipeline: beam.Pipeline, config: StreamConfig) -> None:
    read = pipeline | "ReadKafka" >> ReadKafkaTrades(config.read)
    parser = with_canonical_instruments(parse_avro_messages, config.instruments)
    transfers = None
    if config.status_read is None and config.transfers_read is None and config.reads_trades:
        results = read.raw | "TradesToBars" >> TradesToBars(config.spec, parser)
        read_dead_letters = [read.dead_letter]
    else:
        inputs = {("trades" if config.reads_trades else "token_transfers"): read.raw}
        read_dead_letters = [read.dead_letter]
        if config.status_read is not None:
            statuses = pipeline | "ReadFeedStatus" >> ReadKafkaTrades(config.status_read)
            inputs["feed_status"] = statuses.raw
            read_dead_letters.append(statuses.dead_letter)
        if config.transfers_read is not None:
            transfers = pipeline | "ReadTokenTransfers" >> ReadKafkaTrades(config.transfers_read)
            inputs["token_transfers"] = transfers.raw
            read_dead_letters.append(transfers.dead_letter)
        results = inputs | "TradesToBars" >> TradesToBars(
            config.spec,
            parser,
            status_parser=parse_feed_status_messages,
            transfer_parser=parse_token_transfer_messages,
        )
    dead_letters = (*read_dead_letters, results["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    written = write_outputs(results["tables"], dead_letters, config.targets)
    (written, read.read_progress) | "CommitOffsets" >> CommitProgress(config.read, config.spec, config.commit_every_s)
    if transfers is not None:
        (written, transfers.read_progress) | "CommitTransferOffsets" >> CommitProgress(
            config.transfers_read, config.spec, config.commit_every_s
        )
