"""Kafka: one message per bar pane, Avro single-object encoded (``io_connectors.kafka_sink``,
imported only to write). A backfill publishes with ``--sink kafka --kafka HOST:PORT``; a stream
always publishes its bars to the broker it reads its trades from (``--bars-topic``)."""

from __future__ import annotations

from dataclasses import dataclass

from io_connectors.sinks.base import ALWAYS, Sink, SinkOptionError, SinkWrites


@dataclass(frozen=True)
class KafkaBarsTarget:
    bootstrap: str
    topic: str = "bars"


class KafkaSink(Sink):
    name = "kafka"
    description = (
        "a Kafka topic: one Avro message per bar pane, keyed exchange:symbol; every other table to its "
        "own, <topic>_ticks, <topic>_consolidated, <topic>_quality and the like (a stream always writes it)"
    )
    in_stream = ALWAYS

    def add_options(self, command, streaming: bool) -> None:
        if streaming:  # the stream's own --kafka, where it reads its trades, receives its bars too
            command.add_argument("--bars-topic", default="bars", help="Kafka topic for bars (default: bars)")
            return
        command.add_argument("--kafka", help="Kafka bootstrap servers for --sink kafka, e.g. 127.0.0.1:9092")
        command.add_argument("--kafka-bars-topic", default="bars", help="topic for --sink kafka (default: bars)")

    def target_from_args(self, args, chosen: bool, streaming: bool) -> KafkaBarsTarget | None:
        if streaming:
            return KafkaBarsTarget(args.kafka, args.bars_topic)
        if chosen != bool(args.kafka):
            raise SinkOptionError("--sink kafka and --kafka HOST:PORT go together")
        return KafkaBarsTarget(args.kafka, args.kafka_bars_topic) if chosen else None

    def settings(self, target: KafkaBarsTarget | None) -> dict:
        return {"kafka_bars_topic": target.topic if target else None}

    def write(self, bars, target: KafkaBarsTarget) -> SinkWrites:
        # Beam loads when a pipeline is built, not when the command line offers sinks
        from io_connectors.kafka_sink import WriteBarsKafka

        sent = bars.bars | "WriteBarsKafka" >> WriteBarsKafka(
            target.bootstrap, target.topic + bars.table.suffix, bars.table.schema
        )
        return SinkWrites(rejected=(sent.dead_letter,))
