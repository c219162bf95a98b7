"""The collector tests' view of Kafka and of the command line: unique topic names, what a collector
published (decoded), and the check that exactly a fake exchange's trades arrived, once each."""

from __future__ import annotations

import argparse
import uuid

from beam_pipelines.collect_command import add_collect_parser
from io_connectors.avro_wire import SchemaStore, decode
from tests.support.kafka import read_topic
from transforms.event_time import datetime_to_micros

STORE = SchemaStore.shipped()


def topic(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def published(bootstrap: str, name: str, expected: int, schema: str = "trade") -> list[tuple]:
    """(message, decoded record) for each message on the topic."""
    return [(m, decode(m.value(), schema, STORE)) for m in read_topic(bootstrap, name, expected, timeout_s=20)]


def kafka_options(bootstrap: str, trades_topic: str) -> list[str]:
    """A collector's Kafka options: the broker, the trades topic and a dead-letter topic of its own."""
    return ["--kafka", bootstrap, "--topic", trades_topic, "--dead-letter-topic", topic("dead")]


def refs(symbol: str, first: int, last: int) -> list[tuple[str, int]]:
    return [(symbol, i) for i in range(first, last + 1)]


def assert_exactly_the_fake_trades(messages, fake_trades, exchange: str):
    by_id = {(t.symbol, t.trade_id): t for t in fake_trades}
    got = [(r["symbol"], int(r["trade_id"])) for _, r in messages]
    assert sorted(got) == sorted(by_id) and len(got) == len(set(got))
    for message, record in messages:
        fake = by_id[(record["symbol"], int(record["trade_id"]))]
        assert message.key() == f"{exchange}:{fake.symbol}".encode()
        assert datetime_to_micros(record["event_time"]) == fake.time_us and message.timestamp()[1] == fake.time_ms
        assert (record["exchange"], record["price"], record["amount"], record["side"]) == (
            exchange,
            fake.price,
            fake.amount,
            fake.taker_side,
        )
        assert record["receive_time"] is not None


def collect_args(*options: str):
    parser = argparse.ArgumentParser(prog="cryptobeam")
    add_collect_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["collect", *options])
