"""The core promise: the same trades through backfill from files and through replay -> Kafka ->
stream on Prism give identical final bars, with disorder, late data, a kill and a restart.

Everything is real: the Kafka broker of the test session, Prism built by set-up, the CLI."""

from __future__ import annotations

import json
import math
import signal
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.bar_tables import run_of
from tests.support.commands import cli
from tests.support.kafka import read_topic
from tests.support.outputs import summary, without_panes
from tests.support.paths import BUNDLED
from tests.support.streams import (
    assert_panes_reach_disk_live,
    backfill_bars,
    committed_offset,
    finish,
    killed_after_its_first_commit,
    new_topic,
    replay,
    resume_after_kill,
    start_stream,
    synthetic_trades,
    wait_for_bar_files,
)


def test_stream_final_bars_equal_backfill_with_disorder_and_late_data(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap)  # two partitions; the bundled symbol fills one, the other stays idle
    replay(kafka_bootstrap, topic, "--disorder", "2s", "--late-fraction", "0.01", "--late-by", "5m", "--seed", "7")
    out = tmp_path / "stream"
    # No --early here: catching up at full speed keeps many windows open, each firing every period.
    finish(
        start_stream(kafka_bootstrap, topic, out, "--allowed-lateness", "10m", "--fill-gaps", "--stop-when-idle", "4s"),
        out,
    )
    expected = backfill_bars(tmp_path, BUNDLED, "--fill-gaps")
    assert len(expected) == 2880 and sum(bar["is_filled"] for bar in expected) == 1009
    assert without_panes(final_bars(str(out))) == without_panes(expected)
    run = summary(out)
    assert run["reconciled"] and run["records_in"] == 10_603 and run["dead_letters"] == 0
    assert run["kafka_offset_commits"] > 0
    timings = Counter(read_bars(str(out)).column("pane_timing").to_pylist())
    assert timings["LATE"] >= 1871  # every traded bar is finalized by the runner's closing pane
    sent = read_topic(kafka_bootstrap, "bars", 1)
    assert sent, "bars also go to the Kafka bars topic"


def test_too_late_trades_and_stream_bars_account_exactly_for_batch_bars(kafka_bootstrap, tmp_path):
    trades = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    synthetic_trades(trades, seconds=20 * 60, per_second=5)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    stream = start_stream(
        kafka_bootstrap, topic, out, "--allowed-lateness", "1m", "--watermark-delay", "2s", "--stop-when-idle", "4s"
    )
    # Paced, so the watermark moves on between a trade's window and its arrival five minutes later.
    replay(
        kafka_bootstrap,
        topic,
        "--speed",
        "150",
        "--late-fraction",
        "0.03",
        "--late-by",
        "5m",
        "--seed",
        "11",
        inputs=str(trades),
    )
    finish(stream, out)
    run = summary(out)
    assert run["reconciled"], run["problems"]
    too_late = ds.dataset(str(out / "dead_letter" / "reason=too_late"), format="parquet").to_table().to_pylist()
    assert len(too_late) == run["dead_letters_by_reason"]["too_late"] > 0
    late_count, late_volume = Counter(), defaultdict(float)
    for record in too_late:
        trade = json.loads(record["payload_string"])  # the trade, located by its topic/partition and offset
        assert record["source"] == f"kafka:{topic}/0" and record["source_offset"] is not None
        start = record["event_time"].timestamp() // 60 * 60
        late_count[(record["symbol"], start)] += 1
        late_volume[(record["symbol"], start)] += float(trade["amount"])
    streamed = {(b["symbol"], b["window_start"].timestamp()): b for b in final_bars(str(out))}
    batch = backfill_bars(tmp_path, str(trades))
    assert len(batch) == 20
    for bar in batch:
        key = (bar["symbol"], bar["window_start"].timestamp())
        got = streamed.get(key, {"trade_count": 0, "volume": 0.0})
        assert got["trade_count"] + late_count[key] == bar["trade_count"], key
        assert math.isclose(got["volume"] + late_volume[key], bar["volume"], rel_tol=1e-9, abs_tol=1e-12), key
    assert sum(late_count.values()) == len(too_late)


def test_panes_reach_disk_live_while_trades_flow(kafka_bootstrap, tmp_path):
    assert_panes_reach_disk_live(kafka_bootstrap, tmp_path, seconds=30)


def test_killed_and_restarted_stream_ends_with_the_same_final_bars(kafka_bootstrap, tmp_path):
    trades = tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv"
    synthetic_trades(trades, seconds=2 * 3600, per_second=2)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    options = ("--allowed-lateness", "10m", "--commit-every", "10m")
    publisher = killed_after_its_first_commit(kafka_bootstrap, topic, out, options, trades)
    killed_at = committed_offset(kafka_bootstrap, topic, topic)
    # The last windows are committed only at a drain, whether or not the replay was still running.
    assert killed_at < 2 * 3600 * 2, "the first run committed the whole topic before it was killed"
    run = resume_after_kill(kafka_bootstrap, topic, out, options, publisher)
    assert run["reconciled"], run["problems"]
    assert run["records_in"] == 2 * 3600 * 2 - killed_at  # the second run re-read only from the committed offset
    assert without_panes(final_bars(str(out))) == without_panes(backfill_bars(tmp_path, str(trades)))
    runs = {run_of(bar["file"]) for bar in read_bars(str(out)).to_pylist()}
    assert len(runs) == 2, "both runs wrote bars"


def test_ctrl_c_drains_every_open_window_and_commits_what_was_read(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    replay(kafka_bootstrap, topic)
    out = tmp_path / "stream"
    stream = start_stream(kafka_bootstrap, topic, out, "--allowed-lateness", "10m")
    wait_for_bar_files(stream, out, 120)
    stream.send_signal(signal.SIGINT)
    finish(stream, out)
    assert "draining" in Path(f"{out}.log").read_text()
    run = summary(out)
    assert run["reconciled"], run["problems"]
    bars = read_bars(str(out)).to_pylist()
    windows = {(b["symbol"], b["window_start"]) for b in bars}
    finals = Counter((b["symbol"], b["window_start"]) for b in bars if b["is_final"])
    assert set(finals) == windows and set(finals.values()) == {1}, "every open window got exactly one final pane"
    assert committed_offset(kafka_bootstrap, topic, topic) == run["records_in"], (
        "drained: every record read is committed"
    )


def test_stream_refuses_a_batch_runner_and_a_missing_prism(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    batch = cli(
        "stream", "--kafka", kafka_bootstrap, "--topic", topic, "--out", str(tmp_path / "a"), "--runner", "direct"
    )
    assert batch.returncode == 2 and "streaming semantics" in batch.stderr and "Traceback" not in batch.stderr
    missing = cli(
        "stream",
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--out",
        str(tmp_path / "b"),
        "--prism-location",
        str(tmp_path / "no-prism"),
    )
    assert missing.returncode == 2 and "Prism is not installed" in missing.stderr
    absent = cli("stream", "--kafka", kafka_bootstrap, "--topic", "no_such_topic", "--out", str(tmp_path / "c"))
    assert absent.returncode == 2 and "no_such_topic" in absent.stderr and "Traceback" not in absent.stderr


@pytest.mark.parametrize("value", ["soon", "-5s"])
def test_stream_rejects_bad_durations(kafka_bootstrap, tmp_path, value):
    result = cli("stream", "--kafka", kafka_bootstrap, "--out", str(tmp_path), f"--stop-when-idle={value}")
    assert result.returncode == 2 and "bad duration" in result.stderr
