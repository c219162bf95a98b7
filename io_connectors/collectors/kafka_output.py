"""Collected trades and dead letters to Kafka, in the project's wire format (``io_connectors.avro_wire``).

Trades are keyed ``exchange:symbol`` so one instrument stays in order on one partition, and carry
their event time as the message timestamp, exactly like ``cryptobeam replay``. Dead letters go to
their own topic with the ``dead_letter`` schema, keyed the same way where the exchange is known.
Connection-state records (``feed_status`` schema) go to the status topic, keyed like the trades of
their instrument, with the collector's clock as the message timestamp. Several feeds share one
producer, so one flush at the end covers them all.
The producer uses the project's settings (idempotence, acks=all, lz4, short linger).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from io_connectors.avro_wire import encode
from io_connectors.kafka_producer import PRODUCER_SETTINGS, produce

log = logging.getLogger("cryptobeam.collect")


class KafkaUnreachable(RuntimeError):
    """No broker answered at the bootstrap address."""


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Ask the cluster for its metadata, quietly, so a wrong address is a clear error before collecting."""
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
    except KafkaException as error:
        detail = error.args[0].str() if hasattr(error.args[0], "str") else error
        raise KafkaUnreachable(f"cannot reach Kafka at {bootstrap}: {detail}") from None


class KafkaOutput:
    """One producer for a collector's topics. ``trade``, ``dead_letter`` and ``feed_status`` write the
    exchanges' records; ``produce`` writes any other (the chain collector's). ``failed`` counts the
    messages Kafka refused for good; ``flush`` waits for acknowledgements, ``close`` too, then lets
    the producer go."""

    def __init__(
        self,
        bootstrap: str,
        trades_topic: str = "trades",
        dead_letter_topic: str = "dead_letters",
        status_topic: str = "feed_status",
    ):
        self.bootstrap, self.trades_topic, self.dead_letter_topic = bootstrap, trades_topic, dead_letter_topic
        self.status_topic = status_topic
        self._producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
        self.failed = 0

    def trade(self, record: dict) -> None:
        self.produce(
            self.trades_topic,
            encode(record, "trade"),
            f"{record['exchange']}:{record['symbol']}",
            record["event_time"] // 1000,
        )

    def dead_letter(self, record: dict) -> None:
        key = ":".join(part for part in (record["exchange"], record["symbol"]) if part)
        self.produce(
            self.dead_letter_topic, encode(record, "dead_letter"), key or None, record["dead_letter_time"] // 1000
        )

    def feed_status(self, record: dict) -> None:
        self.produce(
            self.status_topic,
            encode(record, "feed_status"),
            f"{record['exchange']}:{record['symbol']}",
            record["event_time"] // 1000,
        )

    def produce(self, topic: str, value: bytes, key: str | None, timestamp_ms: int) -> None:
        """Queue one encoded message; a refusal is logged and counted in ``failed``."""
        produce(self._producer, topic, value, key, timestamp_ms, self._delivered)

    def _delivered(self, error, message) -> None:
        if error is not None:
            self.failed += 1
            if self.failed <= 5:
                log.error("Kafka did not take a message for %s: %s", message.topic(), error)

    def pending(self) -> int:
        """Messages handed to the producer and not yet acknowledged (0 once closed)."""
        producer = self._producer
        return len(producer) if producer is not None else 0

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every message so far to be acknowledged; how many were
        not: those still waiting plus those refused (``failed``). The producer stays open."""
        return self._producer.flush(timeout) + self.failed

    def close(self, timeout: float = 30.0) -> int:
        """``flush``, then let the producer go; the number of messages not acknowledged."""
        undelivered = self.flush(timeout)
        self._producer = None  # destroys the client, so it stops reconnecting in the background
        return undelivered
