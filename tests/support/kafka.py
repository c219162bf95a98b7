"""Reading what a run published to the test session's real Kafka broker."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages, waited = [], 0.0
    while len(messages) < expected and waited < timeout_s:
        batch = consumer.consume(num_messages=1000, timeout=1.0)
        waited += 1.0
        messages += [m for m in batch if m.error() is None]
    consumer.close()
    return messages
