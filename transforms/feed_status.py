"""Feed status: a live collector's connection state per (exchange, symbol)
(``schemas/feed_status.avsc``), as a record type of the event-time skeleton.

Consolidated bars read it to exclude a venue while its collector reports it disconnected, rather
than wait until it has been silent long enough to be stale. Its records go through the same
skeleton as trades (validate, route too-late, dedupe, window): a record re-delivered by Kafka
counts once, and one past the allowed lateness is a dead letter, not a silent drop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from transforms.dead_letter import dead_letter
from transforms.event_time import micros_to_iso
from transforms.row_reasons import FirstReasons

FEED_STATUS_COUNTERS = "feed_status."
"""Prefix of the status records' own counters: they are reconciled apart from trades."""
STATUSES = ("connected", "disconnected", "resubscribed")
DISCONNECTED = "disconnected"
STATUS_FIELDS = ("exchange", "symbol", "base", "quote", "status", "event_time", "reason", "collector")
STATUS_BATCH_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("status", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("collector", pa.string()),
        ("source", pa.string()),
        ("source_offset", pa.int64()),
        ("payload", pa.binary()),
    ]
)


def make_status_batch(records: list[dict], source: str, offsets: list[int], payloads: list[bytes]) -> pa.Table:
    """A batch of decoded status records (times as integer microseconds), with where each came from."""
    columns = {name: [r.get(name) for r in records] for name in STATUS_FIELDS}
    arrays = [
        pa.array(columns[f.name], pa.int64()).cast(f.type)
        if f.name == "event_time"
        else pa.array(columns[f.name], f.type)
        for f in STATUS_BATCH_SCHEMA
        if f.name in columns
    ]
    arrays += [
        pa.array([source] * len(records), pa.string()),
        pa.array(offsets, pa.int64()),
        pa.array(payloads, pa.binary()),
    ]
    return pa.Table.from_arrays(arrays, schema=STATUS_BATCH_SCHEMA)


def invalid_status_rows(batch: pa.Table, min_time_us: int, max_time_us: int) -> FirstReasons:
    reasons = FirstReasons(batch.num_rows)
    for column in ("exchange", "symbol"):
        values = batch.column(column)
        empty = pc.or_kleene(pc.is_null(values), pc.equal(pc.binary_length(values), 0))
        reasons.flag(pc.fill_null(empty, True).to_numpy(zero_copy_only=False), f"missing_{column}")
    known = pc.fill_null(pc.is_in(batch.column("status"), pa.array(STATUSES)), False)
    reasons.flag(~known.to_numpy(zero_copy_only=False), "unknown_status")
    times = batch.column("event_time").cast(pa.int64())
    reasons.flag(pc.is_null(times).to_numpy(zero_copy_only=False), "missing_event_time")
    t = pc.fill_null(times, 0).to_numpy(zero_copy_only=False)
    reasons.flag((t < min_time_us) | (t > max_time_us), "timestamp_out_of_range")
    return reasons


def status_dead_letters(
    batch: pa.Table, rows: list[int], reasons: list[str], messages: list[str], stage: str, event_times: list[int | None]
) -> list[dict]:
    picked = batch.take(pa.array(rows, pa.int64()))
    values = {
        name: picked.column(name).to_pylist() for name in ("exchange", "symbol", "source", "source_offset", "payload")
    }
    letters = []
    for k, (reason, message, time_us) in enumerate(zip(reasons, messages, event_times)):
        letters.append(
            dead_letter(
                reason,
                message,
                stage,
                values["payload"][k],
                values["source"][k],
                values["source_offset"][k],
                values["exchange"][k],
                values["symbol"][k],
                time_us,
            )
        )
    return letters


def rejected_status_dead_letters(batch: pa.Table, rejected: list[tuple[int, str]]) -> list[dict]:
    rows, reasons = [i for i, _ in rejected], [reason for _, reason in rejected]
    times = batch.column("event_time").cast(pa.int64()).take(pa.array(rows, pa.int64())).to_pylist()
    statuses = batch.column("status").take(pa.array(rows, pa.int64())).to_pylist()
    messages = [f"{reason}: status {status!r} at {time} us" for reason, status, time in zip(reasons, statuses, times)]
    return status_dead_letters(batch, rows, reasons, messages, "validate", times)


@dataclass
class FeedStatusChunk:
    """One (exchange, symbol)'s status records of one window, with what dedupe compares."""

    exchange: str
    symbol: str
    base: str | None
    quote: str | None
    window_start: int
    event_time: np.ndarray
    status: list
    reason: list
    collector: list
    id_hash: np.ndarray
    content_hash: np.ndarray
    sources: list
    offsets: list
    summary: object = None
    distinct_ids: bool = False

    def __len__(self) -> int:
        return len(self.event_time)

    @property
    def nbytes(self) -> int:
        return self.event_time.nbytes * 3 + sum(len(s) for s in self.status)

    def take(self, rows) -> "FeedStatusChunk":
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        picked = rows.tolist()
        return FeedStatusChunk(
            self.exchange,
            self.symbol,
            self.base,
            self.quote,
            self.window_start,
            self.event_time[rows],
            [self.status[i] for i in picked],
            [self.reason[i] for i in picked],
            [self.collector[i] for i in picked],
            self.id_hash[rows],
            self.content_hash[rows],
            [self.sources[i] for i in picked],
            [self.offsets[i] for i in picked],
        )

    def source(self, i: int) -> str:
        return self.sources[i]

    def offset(self, i: int) -> int | None:
        return self.offsets[i]

    def trade_record(self, i: int) -> str:
        """The record as JSON: the payload of a dead letter raised after parsing."""
        return json.dumps(
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "base": self.base,
                "quote": self.quote,
                "status": self.status[i],
                "reason": self.reason[i],
                "collector": self.collector[i],
                "event_time": micros_to_iso(int(self.event_time[i])),
            },
            sort_keys=True,
        )


def status_chunks_of(batch: pa.Table, window_starts: np.ndarray, key: tuple[str, str]):
    """One key's status records cut into one chunk per window start. A record's identity is
    (collector, time, status): a collector never publishes two states of one feed at one moment."""
    exchange, symbol = key
    times = batch.column("event_time").cast(pa.int64()).to_numpy()
    identity = pl.DataFrame(
        {
            "collector": batch.column("collector").to_pylist(),
            "time": times,
            "status": batch.column("status").to_pylist(),
        }
    )
    ids = identity.hash_rows(seed=0x5EED).to_numpy()
    content = pl.DataFrame({"reason": batch.column("reason").to_pylist()}).hash_rows(seed=0x5EED).to_numpy()
    columns = {
        name: batch.column(name).to_pylist()
        for name in ("base", "quote", "status", "reason", "collector", "source", "source_offset")
    }
    for start in np.unique(window_starts).tolist():
        rows = np.flatnonzero(window_starts == start)
        picked = rows.tolist()
        yield FeedStatusChunk(
            exchange,
            symbol,
            columns["base"][picked[0]],
            columns["quote"][picked[0]],
            int(start),
            times[rows],
            [columns["status"][i] for i in picked],
            [columns["reason"][i] for i in picked],
            [columns["collector"][i] for i in picked],
            ids[rows],
            content[rows],
            [columns["source"][i] for i in picked],
            [columns["source_offset"][i] for i in picked],
        )
