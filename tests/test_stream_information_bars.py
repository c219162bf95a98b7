"""Information bars (tick, volume, dollar) in ``cryptobeam stream``: the final bars of each table
equal a backfill's under disorder and late trades, the stream maps instruments with its own
``--instruments``, and a killed stream resumes from the day start, so the restarted run rebuilds
the day's bars. Everything real: the session's Kafka broker, Prism, the CLI."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.bar_tables import run_of
from io_connectors.kafka_progress import resume_point_us
from io_connectors.kafka_source import retrying_coordinator_call
from tests.support.commands import run_backfill
from tests.support.outputs import summary, without_panes
from tests.support.streams import (
    finish,
    killed_after_its_first_commit,
    new_topic,
    replay,
    resume_after_kill,
    start_stream,
)
from transforms.bar_kinds import Threshold
from transforms.bar_spec import BarSpec


def _micros(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1_000_000


def _utc_midnight_before(micros: int) -> int:
    """An independent reference: the calendar's midnight of the UTC date holding ``micros``."""
    day = datetime.fromtimestamp(micros // 1_000_000, timezone.utc).date()
    return _micros(day.isoformat())


TICKS = (Threshold("ticks", 500.0),)


@pytest.mark.parametrize(
    "interval, at, boundary",
    [
        ("1m", "2024-01-01T13:47:31", "2024-01-01T13:47:00"),
        ("15m", "2024-01-01T00:14:59", "2024-01-01T00:00:00"),
        ("4h", "2024-03-05T23:59:59", "2024-03-05T20:00:00"),
        ("1w", "2024-01-10T08:00:00", "2024-01-08T00:00:00"),  # weeks start on Monday
    ],
)
def test_without_information_bars_the_resume_point_is_the_interval_boundary(interval, at, boundary):
    assert resume_point_us(_micros(at), BarSpec.of(interval)) == _micros(boundary)
    assert resume_point_us(_micros(at) + 1, BarSpec.of(interval, fill_gaps=True)) == _micros(boundary)


@pytest.mark.parametrize(
    "interval, at",
    [
        ("1m", "2024-01-01T13:47:31"),
        ("1m", "2024-01-01T00:00:00"),  # a day start stays where it is
        ("1m", "2023-12-31T23:59:59"),  # a second before midnight is the day before
        ("15m", "2024-02-29T23:45:00"),
        ("4h", "2024-03-05T03:00:00"),
        ("7h", "2024-01-02T02:00:00"),  # 7h windows straddle midnights: this one began the day before
        ("1d", "2024-01-10T08:00:00"),
    ],
)
def test_with_information_bars_the_resume_point_is_the_utc_day_start(interval, at):
    spec = BarSpec.of(interval, thresholds=TICKS)
    through = _micros(at) + 123
    expected = _utc_midnight_before(int(spec.interval.window_start_micros(through)))
    assert resume_point_us(through, spec) == expected
    assert resume_point_us(through, BarSpec.of(interval, time_bars=False, thresholds=TICKS)) == expected
    assert expected <= resume_point_us(through, BarSpec.of(interval)) < expected + 86_400_000_000


# --- end to end: replay -> Kafka -> stream on Prism, against a backfill of the same trades ---

DAY_TWO = _micros("2024-01-02T00:00:00")
BARS = ("--bars", "time:1m", "--bars", "ticks:100", "--bars", "volume:150")
INFORMATION_TABLES = ("bars_ticks", "bars_volume")
MAPPED, UNMAPPED = "ZZTESTUSDT", "QQTESTUSDT"  # neither is in the shipped instruments table
CUSTOM_PAIR = ("ZZT", "USD")  # not the best-effort split of the symbol (ZZTEST/USDT)


def _trades_csv(path: Path, start: str, count: int, first_id: int = 0) -> Path:
    """Binance aggTrades rows, one a second from ``start``: prices and sizes vary, ids ascend."""
    start_ms = _micros(start) // 1000
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            f"{first_id + i},{100 + (i % 17) * 0.5},{1 + i % 3},{i},{i},{start_ms + i * 1000},"
            f"{'true' if i % 2 else 'false'},true\n"
            for i in range(count)
        )
    )
    return path


def _instruments_file(tmp_path: Path) -> Path:
    path = tmp_path / "instruments.csv"
    path.write_text(f"exchange,symbol,base,quote\nbinance,{MAPPED},{CUSTOM_PAIR[0]},{CUSTOM_PAIR[1]}\n")
    return path


def _newest_window_end_us(bars_dir: Path, seen: dict) -> int:
    """The latest time bar window end in the stream's files so far (each file read once)."""
    for path in bars_dir.rglob("*.parquet") if bars_dir.exists() else ():
        if path not in seen:
            column = pq.read_table(path, columns=["window_end"]).column("window_end").cast(pa.int64())
            seen[path] = max(column.to_pylist(), default=0)
    return max(seen.values(), default=0)


def _rows_in(directory: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in directory.rglob("*.parquet")) if directory.exists() else 0


def _wait_until(condition, stream, out, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert stream.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}: {Path(f'{out}.log').read_text()[-2000:]}"
        time.sleep(0.2)


def test_stream_information_bars_equal_backfill_with_canonical_instruments(kafka_bootstrap, tmp_path):
    # Half an hour across a UTC midnight, so each kind's count restarts within the run.
    trades = tmp_path / "trades"
    for symbol in (MAPPED, UNMAPPED):
        _trades_csv(trades / f"{symbol}-aggTrades-2024-01-01.csv", "2024-01-01T23:50:00", 1800)
    # Trades of the mapped symbol from noon, sent once the stream's watermark is past midnight:
    # too late, so dead letters, which keep the trade as the stream parsed it.
    too_late = _trades_csv(
        tmp_path / "late" / f"{MAPPED}-aggTrades-2024-01-01.csv", "2024-01-01T12:00:00", 20, first_id=1_000_000
    )
    instruments = _instruments_file(tmp_path)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    stream = start_stream(
        kafka_bootstrap, topic, out, *BARS, "--allowed-lateness", "10m", "--instruments", str(instruments)
    )
    # Disorder and late trades (within the allowed lateness): bars are released, then revised.
    replay(
        kafka_bootstrap,
        topic,
        "--disorder",
        "2s",
        "--late-fraction",
        "0.02",
        "--late-by",
        "5m",
        "--seed",
        "3",
        inputs=str(trades / "*.csv"),
    )
    seen: dict = {}
    _wait_until(
        lambda: _newest_window_end_us(out / "bars", seen) >= DAY_TWO + 5 * 60_000_000,
        stream,
        out,
        120,
        "the stream never wrote bars past midnight",
    )
    replay(kafka_bootstrap, topic, inputs=str(too_late))  # without --instruments: the stream maps them itself
    _wait_until(
        lambda: _rows_in(out / "dead_letter" / "reason=too_late") >= 20,
        stream,
        out,
        60,
        "the late trades never became dead letters",
    )
    stream.send_signal(signal.SIGINT)  # everything is read: drain
    finish(stream, out)

    backfill = tmp_path / "backfill"
    result = run_backfill("binance-aggtrades", trades / "*.csv", backfill, *BARS, "--instruments", str(instruments))
    assert result.returncode == 0, result.stdout + result.stderr
    for table in INFORMATION_TABLES:
        expected = final_bars(str(backfill), table=table)
        assert {bar["day"] for bar in expected} == {"2024-01-01", "2024-01-02"}, table
        assert without_panes(final_bars(str(out), table=table)) == without_panes(expected), table
    assert without_panes(final_bars(str(out))) == without_panes(final_bars(str(backfill)))
    revised = [
        bar
        for table in INFORMATION_TABLES
        for bar in read_bars(str(out), table=table).to_pylist()
        if bar["pane_index"] > 0
    ]
    assert revised, "late trades revised some information bars"

    # The stream's own --instruments mapped the symbol: the too-late trades carry the custom pair
    # (the replay, without the file, sent the best-effort split), and only the other symbol is unknown.
    letters = ds.dataset(str(out / "dead_letter" / "reason=too_late"), format="parquet").to_table().to_pylist()
    assert len(letters) == 20
    assert {
        (
            json.loads(letter["payload_string"])["symbol"],
            json.loads(letter["payload_string"])["base"],
            json.loads(letter["payload_string"])["quote"],
        )
        for letter in letters
    } == {(MAPPED, *CUSTOM_PAIR)}
    run = summary(out)
    assert run["unknown_instruments"] == {f"binance:{UNMAPPED}": 1800}
    assert run["reconciled"], run["problems"]
    assert run["records_in"] == 2 * 1800 + 20 and run["dead_letters_by_reason"] == {"too_late": 20}


def _committed_with_resume_point(bootstrap: str, topic: str) -> tuple[int, int]:
    """The stream group's committed offset of partition 0 and the resume point in its metadata."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "log_level": 3})
    try:  # retried while the broker creates its offsets topic
        found = retrying_coordinator_call(lambda: consumer.committed([TopicPartition(topic, 0)], timeout=10), 30)[0]
    finally:
        consumer.close()
    return found.offset, json.loads(found.metadata or "{}").get("resume_us", 0)


def test_killed_and_restarted_stream_rebuilds_the_day_and_ends_with_the_backfills_information_bars(
    kafka_bootstrap, tmp_path
):
    total = 2 * 3600  # one trade a second, 23:00 to 01:00: the commit can reach the second day's start
    trades = _trades_csv(tmp_path / "trades" / "ETHUSDT-aggTrades-2024-01-01.csv", "2024-01-01T23:00:00", total)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    options = ("--bars", "ticks:500", "--allowed-lateness", "10m", "--commit-every", "10m")  # no time bars
    publisher = killed_after_its_first_commit(kafka_bootstrap, topic, out, options, trades)
    killed_at, resume_us = _committed_with_resume_point(kafka_bootstrap, topic)
    # The tick count restarts each day and the next run has no state: it resumes from the day start.
    assert resume_us == DAY_TWO and 0 < killed_at < total
    run = resume_after_kill(kafka_bootstrap, topic, out, options, publisher)
    assert run["reconciled"], run["problems"]
    assert run["records_in"] == total - killed_at  # the second run re-read only from the day start's offset
    backfill = tmp_path / "backfill"
    result = run_backfill("binance-aggtrades", trades, backfill, "--bars", "ticks:500")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = final_bars(str(backfill), table="bars_ticks")
    assert {bar["day"] for bar in expected} == {"2024-01-01", "2024-01-02"}
    streamed = final_bars(str(out), table="bars_ticks")
    assert without_panes(streamed) == without_panes(expected)
    assert {run_of(bar["file"]) for bar in streamed if bar["day"] == "2024-01-02"} == {run["run"]}, (
        "the second run rebuilt the second day"
    )
