"""Kafka sink for bars: one message per pane, Avro single-object encoded (``io_connectors.avro_wire``).

Key ``exchange:symbol`` (one symbol's bars stay in order on one partition), message timestamp
the bar's window end. The producer is set for throughput and safety: idempotence, acks=all, lz4,
a short linger. A message Kafka finally refuses becomes a dead letter with Kafka's error.
"""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from io_connectors.avro_wire import encode
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter

PRODUCER_SETTINGS = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 10,
    "batch.size": 65536,
    "max.in.flight.requests.per.connection": 5,
    "log_level": 3,
}


def produce(producer, topic: str, value: bytes, key: str | None, timestamp_ms: int, on_delivery=None) -> None:
    """Queue one message; when the local queue is full, let deliveries drain and retry.
    Every producer of the project (sink, replay, collectors, benchmarks) goes through here."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


class _ProduceBars(beam.DoFn):
    def __init__(self, bootstrap: str, topic: str):
        self._bootstrap, self._topic = bootstrap, topic
        self._sent = beam.metrics.Metrics.counter("cryptobeam", "kafka_bars_sent")
        self._rejected = beam.metrics.Metrics.counter("cryptobeam", "sink_rejections")

    def setup(self):
        from confluent_kafka import Producer
        self._producer = Producer({"bootstrap.servers": self._bootstrap, **PRODUCER_SETTINGS})

    def start_bundle(self):
        self._failed = []

    def process(self, bar: dict):
        def delivered(error, _message, bar=bar):
            if error is not None:
                self._failed.append((bar, str(error)))
            else:
                self._sent.inc()
        produce(self._producer, self._topic, encode(bar, "bar"), f"{bar['exchange']}:{bar['symbol']}",
                bar["window_end"] // 1000, delivered)

    def finish_bundle(self):
        remaining = self._producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} Kafka message(s) still undelivered after 60 s")
        for bar, error in self._failed:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, GlobalWindows.windowed_value(dead_letter(
                "kafka_rejected", error, "sink", json.dumps(bar, default=str), f"kafka:{self._topic}",
                None, bar["exchange"], bar["symbol"])))

    def teardown(self):
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)


class WriteBarsKafka(beam.PTransform):
    """Bars -> Kafka topic; returns outputs whose ``dead_letter`` holds bars Kafka refused."""

    def __init__(self, bootstrap: str, topic: str = "bars", label=None):
        super().__init__(label)
        self._bootstrap, self._topic = bootstrap, topic

    def expand(self, bars):
        return bars | beam.ParDo(_ProduceBars(self._bootstrap, self._topic)).with_outputs(DEAD_LETTER_TAG, main="sent")
