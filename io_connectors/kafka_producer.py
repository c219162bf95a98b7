"""The project's Kafka producing, Beam-free: the producer settings and the one way a message is queued.

The bars sink (``io_connectors.kafka_sink``), replay, the live collectors and the benchmarks all
produce through here. The collectors import it at start, so it must not load Beam.
"""

from __future__ import annotations

PRODUCER_SETTINGS = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 10,
    "batch.size": 65536,
    "max.in.flight.requests.per.connection": 5,
    "log_level": 3,
}
"""Throughput and safety: idempotence, acks=all, lz4, a short linger."""


def produce(producer, topic: str, value: bytes, key: str | None, timestamp_ms: int, on_delivery=None) -> None:
    """Queue one message on a ``confluent_kafka.Producer``; when the local queue is full, let
    deliveries drain and retry."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)
