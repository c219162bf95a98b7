"""Kafka sink for bars: one message per pane, Avro single-object encoded (``io_connectors.avro_wire``).

Key ``exchange:symbol`` (one symbol's bars stay in order on one partition), message timestamp
the bar's window end. The producer has the project's settings (``io_connectors.kafka_producer``):
idempotence, acks=all, lz4, a short linger. A message Kafka finally refuses becomes a dead letter
with Kafka's error. A broker that is away is waited for: a bundle ends only once each of its
messages has been delivered or refused, which librdkafka settles within ``message.timeout.ms``
(5 minutes by default).
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from confluent_kafka import Producer

from io_connectors.avro_wire import encode
from io_connectors.kafka_producer import PRODUCER_SETTINGS, produce
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter

FLUSH_STEP_S = 10
"""How long one wait for deliveries lasts before the wait is logged and begun again."""


class _ProduceBars(beam.DoFn):
    def __init__(self, bootstrap: str, topic: str, schema: str = "bar"):
        self._bootstrap, self._topic, self._schema = bootstrap, topic, schema
        self._sent = beam.metrics.Metrics.counter("cryptobeam", "kafka_bars_sent")
        self._rejected = beam.metrics.Metrics.counter("cryptobeam", "sink_rejections")
        self._outages = beam.metrics.Metrics.counter("cryptobeam", "kafka_broker_outages")
        self._retries = beam.metrics.Metrics.counter("cryptobeam", "kafka_broker_retries")

    def setup(self):
        self._producer = Producer({"bootstrap.servers": self._bootstrap, **PRODUCER_SETTINGS})

    def start_bundle(self):
        self._failed = []

    def process(self, bar: dict):
        def delivered(error, _message, bar=bar):
            if error is not None:
                self._failed.append((bar, str(error)))
            else:
                self._sent.inc()

        produce(
            self._producer,
            self._topic,
            encode(bar, self._schema),
            f"{bar['exchange']}:{bar['symbol']}",
            bar["window_end"] // 1000,
            delivered,
        )

    def finish_bundle(self):
        waited = 0
        while remaining := self._producer.flush(FLUSH_STEP_S):
            if not waited:
                self._outages.inc()
            self._retries.inc()  # each further wait is one more try, as for the source's broker calls
            waited += FLUSH_STEP_S
            logging.getLogger(__name__).warning(
                "%d bar message(s) still undelivered to Kafka after %d s; waiting for the broker", remaining, waited
            )
        for bar, error in self._failed:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                GlobalWindows.windowed_value(
                    dead_letter(
                        "kafka_rejected",
                        error,
                        "sink",
                        json.dumps(bar, default=str),
                        f"kafka:{self._topic}",
                        None,
                        bar["exchange"],
                        bar["symbol"],
                    )
                ),
            )

    def teardown(self):
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)


class WriteBarsKafka(beam.PTransform):
    """Bars -> Kafka topic; returns outputs whose ``dead_letter`` holds bars Kafka refused."""

    def __init__(self, bootstrap: str, topic: str = "bars", schema: str = "bar", label=None):
        super().__init__(label)
        self._bootstrap, self._topic, self._schema = bootstrap, topic, schema

    def expand(self, bars):
        return bars | beam.ParDo(_ProduceBars(self._bootstrap, self._topic, self._schema)).with_outputs(
            DEAD_LETTER_TAG, main="sent"
        )
