"""Replay historical trade files into Kafka, in event-time order, for demos and stream tests.

Trades go to the ``trades`` topic in the Avro wire format, keyed ``exchange:symbol``, each with
its event time as the message timestamp. Pacing follows event time at ``speed`` times real time
(or as fast as possible). ``disorder`` shuffles trades within a bound, and ``late_fraction`` of
them are held back by ``late_by``: what a live feed does to a stream processor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from confluent_kafka import Producer

from io_connectors.avro_wire import encode
from io_connectors.kafka_producer import PRODUCER_SETTINGS, produce
from io_connectors.source_formats import SourceFormat
from io_connectors.sources import read_raw_batches
from transforms.trade_batch import TRADE_FIELDS


@dataclass(frozen=True)
class ReplayPlan:
    speed: float | None = None  # None: as fast as possible
    disorder_us: int = 0
    late_fraction: float = 0.0
    late_by_us: int = 0
    seed: int = 0


@dataclass
class ReplayReport:
    records_read: int = 0
    rejected: int = 0
    published: int = 0
    late: int = 0
    seconds: float = 0.0


def load_trades(
    source: SourceFormat, parser, paths: list[str], unreadable: list[str] | None = None
) -> tuple[pa.Table, int, int]:
    """(valid trades, records read, records rejected by the parser).

    As in a backfill, a record the parser or the reader cannot use is rejected alone, the
    unreadable rest of a damaged file counts as one rejected record, and so does a file that
    cannot be read at all (a corrupt archive, a CSV given as Parquet); the path and error of such
    a file are appended to ``unreadable``.
    """
    tables, read, rejected = [], 0, 0
    failures = [] if unreadable is None else unreadable
    for path in paths:
        failed_before = len(failures)
        for raw in _raw_batches(source, path, failures):
            not_passed_on = len(raw.dead_letters)  # over-long lines, the unreadable rest of a damaged file
            read += not_passed_on
            rejected += not_passed_on
            if not len(raw):
                continue
            trades, dead = parser(raw)
            read += trades.num_rows + len(dead)
            rejected += len(dead)
            tables.append(trades.select(TRADE_FIELDS))
        read += len(failures) - failed_before
        rejected += len(failures) - failed_before
    if not tables:
        return pa.table({name: [] for name in TRADE_FIELDS}), read, rejected
    return pa.concat_tables(tables), read, rejected


def load_trades_of_sources(parts: list[tuple[SourceFormat, object, list[str]]]) -> tuple[pa.Table, int, int]:
    """``load_trades`` of each (source, its parser, its paths), the trades of all of them together."""
    loaded = [load_trades(source, parser, paths) for source, parser, paths in parts]
    tables = [trades for trades, _, _ in loaded if trades.num_rows]
    trades = pa.concat_tables(tables, promote_options="permissive") if tables else loaded[0][0]
    return trades, sum(read for _, read, _ in loaded), sum(rejected for _, _, rejected in loaded)


def _raw_batches(source: SourceFormat, path: str, failures: list[str]):
    """The file's raw batches, as far as they can be read; a read error ends them and is noted."""
    try:
        yield from read_raw_batches(source, path)
    except Exception as error:  # zipfile's, gzip's, Arrow's, fastavro's, I/O: the backfill's unreadable_file
        failures.append(f"{path}: {type(error).__name__}: {error}")


def send_order(event_times: np.ndarray, plan: ReplayPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row order to send in, send time of each row in that order, which rows were made late)."""
    rng = np.random.default_rng(plan.seed)
    send = event_times.astype(np.int64).copy()
    if plan.disorder_us:
        send += rng.integers(0, plan.disorder_us + 1, len(send))
    late = rng.random(len(send)) < plan.late_fraction if plan.late_fraction else np.zeros(len(send), dtype=bool)
    send[late] += plan.late_by_us
    order = np.argsort(send, kind="stable")
    return order, send[order], late


def replay(trades: pa.Table, bootstrap: str, topic: str, plan: ReplayPlan, on_progress=None) -> ReplayReport:
    report = ReplayReport()
    times = trades.column("event_time").cast(pa.int64()).to_numpy()
    receive_times = trades.column("receive_time").cast(pa.int64()).to_pylist()
    order, send_times, late = send_order(times, plan)
    rows = trades.drop_columns(["event_time", "receive_time"]).to_pylist()
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    failures = []
    started = time.monotonic()
    for n, (row_index, send_us) in enumerate(zip(order.tolist(), send_times.tolist())):
        if plan.speed:
            due = (send_us - int(send_times[0])) / 1_000_000 / plan.speed
            wait = due - (time.monotonic() - started)
            if wait > 0:
                producer.poll(0)
                time.sleep(wait)
        row = rows[row_index]
        record = {**row, "event_time": int(times[row_index]), "receive_time": receive_times[row_index]}
        produce(
            producer,
            topic,
            encode(record, "trade"),
            f"{row['exchange']}:{row['symbol']}",
            int(times[row_index]) // 1000,
            lambda error, _m: failures.append(error) if error else None,
        )
        if on_progress and n % 5000 == 0:
            on_progress(n)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining + len(failures)} trade(s) were not delivered to Kafka: {failures[:1]}")
    report.published = len(order)
    report.late = int(late.sum())
    report.seconds = time.monotonic() - started
    return report
