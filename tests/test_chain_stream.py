"""ERC-20 transfers from Kafka (as ``collect --chain`` publishes them) through ``cryptobeam stream``
on Prism: a reorg's retractions arrive after their transfers' windows closed on time and revise
them in late panes, re-deliveries count once, and the final token activity equals the reference
over the canonical chain. Everything is real: the session's Kafka broker, Prism, the CLI."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from confluent_kafka import Producer

from io_connectors.avro_wire import encode
from io_connectors.bar_reader import final_bars, read_bars
from tests.support.chain_records import reference_activity, retraction, token_address, transfer
from tests.support.streams import finish, new_topic, start_stream

MINUTE_US = 60_000_000


def _publish(bootstrap: str, topic: str, records: list) -> None:
    """Records as ``collect --chain`` publishes them (stamped with their event time); bytes as they are."""
    producer = Producer({"bootstrap.servers": bootstrap})
    stamp = records[0]["event_time"] // 1000
    for record in records:
        if not isinstance(record, bytes):
            stamp = record["event_time"] // 1000
        value = record if isinstance(record, bytes) else encode(record, "token_transfer")
        producer.produce(topic, value=value, key=b"ethereum", timestamp=stamp)
    assert producer.flush(30) == 0


def test_retractions_after_the_on_time_panes_revise_them_and_the_final_rows_are_canonical(kafka_bootstrap, tmp_path):
    rng = random.Random(11)
    transfers = [
        transfer(rng.randrange(2), rng.randrange(5), rng.randrange(5), rng.randrange(1, 10**20), block, i)
        for block in range(25)  # 12 s a block: five minutes
        for i in range(rng.randrange(1, 4))
    ]
    orphaned = [row for row in transfers if row["block_number"] in (3, 4, 12)]
    # The follower's order: the chain as read, then (once the head moved on) the reorg's
    # retractions, newest first, then the replacement blocks' transfers (another fork).
    replacement = [
        transfer(row["token_address"], 1, 2, 5, row["block_number"], k, fork=1) for k, row in enumerate(orphaned[:2])
    ]
    late_head = [transfer(0, 1, 3, 7, block, 0) for block in range(60, 70)]  # the chain goes on: windows close
    before_reorg = transfers + transfers[:4] + late_head  # four re-delivered after a collector restart
    after_reorg = [retraction(row) for row in reversed(orphaned)] + replacement + [b"not a message of the wire format"]
    published = before_reorg + after_reorg
    topic = new_topic(kafka_bootstrap, 1)
    _publish(kafka_bootstrap, topic, before_reorg)
    out = tmp_path / "out"
    stream = start_stream(
        kafka_bootstrap,
        f"{topic}-no-trades",
        out,
        "--transfers-topic",
        topic,
        "--bars",
        "chain:1m",
        "--allowed-lateness",
        "30m",
        "--watermark-delay",
        "1s",
        "--stop-when-idle",
        "20s",
        group=topic,
    )
    deadline = time.monotonic() + 180
    while not list((out / "token_activity").rglob("*.parquet")):  # the on-time panes are on disk
        assert time.monotonic() < deadline and stream.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.2)
    _publish(kafka_bootstrap, topic, after_reorg)
    finish(stream, out)

    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"], summary["problems"]
    records = [row for row in published if isinstance(row, dict)]
    assert summary["token_transfers"]["records_in"] == len(published)
    assert summary["token_transfers"]["duplicates"] == 4
    assert summary["dead_letters_by_reason"] == {"not_single_object_encoded": 1}

    expected = reference_activity(records, MINUTE_US)
    final = {
        (row["token_address"], int(row["window_start"].timestamp()) * 1_000_000): row
        for row in final_bars(str(out), "token_activity")
    }
    assert {(token, start) for (_, token, start) in expected} <= set(final)
    for (_, token, start), figures in expected.items():
        row = final[(token, start)]
        assert (row["transfer_count"], row["volume_raw"], row["unique_senders"]) == (
            figures["transfer_count"],
            figures["volume_raw"],
            figures["unique_senders"],
        )
    # A window a retraction changed was revised by a late pane after its on-time one.
    panes = read_bars(str(out), table="token_activity").to_pylist()
    first_orphan = orphaned[0]
    start = first_orphan["event_time"] // MINUTE_US * MINUTE_US
    revised = [
        p
        for p in panes
        if p["token_address"] == first_orphan["token_address"]
        and int(p["window_start"].timestamp()) * 1_000_000 == start
    ]
    timings = [p["pane_timing"] for p in sorted(revised, key=lambda p: p["pane_index"])]
    assert "LATE" in timings and timings.index("LATE") > 0
    assert token_address(0) in {token for token, _ in final}
