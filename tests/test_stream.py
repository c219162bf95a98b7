"""The core promise: the same trades through backfill from files and through replay -> Kafka ->
stream on Prism give identical final bars, with disorder, late data, a kill and a restart.

Everything is real: the Kafka broker of the test session, Prism built by set-up, the CLI."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.kafka_source import _retrying
from io_connectors.parquet_sink import run_of
from runners.local_kafka import create_topics
from tests.test_kafka import read_topic

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "cryptobeam")
BUNDLED = str(ROOT / "data" / "*.zip")
PANE_FIELDS = ("pane_timing", "pane_index", "is_final", "file")


def new_topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"trades_{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {name: partitions})
    return name


def cli(*args, timeout=600):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)


def replay(bootstrap, topic, *extra, inputs=BUNDLED, source="binance-aggtrades", wait=True):
    command = [CLI, "replay", "--source", source, "--input", inputs, "--kafka", bootstrap, "--topic", topic,
               "--no-progress", *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def start_stream(bootstrap, topic, out, *extra, group=None):
    """A stream in its own process group, so a test can kill it together with its Prism."""
    log = open(f"{out}.log", "a")
    return subprocess.Popen([CLI, "stream", "--kafka", bootstrap, "--topic", topic, "--group", group or topic,
                             "--out", str(out), "--flush-every", "1s", "--no-progress", *extra],
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process, out, timeout=240) -> None:
    returncode = process.wait(timeout=timeout)
    assert returncode == 0, Path(f"{out}.log").read_text()[-3000:]


def backfill_bars(tmp_path, inputs=BUNDLED, *extra, source="binance-aggtrades") -> list[dict]:
    out = tmp_path / "backfill"
    result = cli("backfill", "--source", source, "--input", inputs, "--out", str(out), "--no-progress", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return final_bars(str(out))


def without_panes(bars: list[dict]) -> list[dict]:
    return [{k: v for k, v in bar.items() if k not in PANE_FIELDS} for bar in bars]


def wait_for_bar_files(stream, out, timeout_s: float) -> None:
    """Until the running stream has written its first bar file."""
    deadline = time.monotonic() + timeout_s
    while not (out / "bars").exists() or not list((out / "bars").rglob("*.parquet")):
        assert time.monotonic() < deadline and stream.poll() is None, Path(f"{out}.log").read_text()[-2000:]
        time.sleep(0.2)


def summary(out) -> dict:
    return json.loads((Path(out) / "_SUMMARY.json").read_text())


def kill_stream(stream) -> None:
    os.killpg(stream.pid, signal.SIGKILL)  # the stream and its Prism die mid-flight, the replay may go on
    stream.wait(timeout=30)


def resume_after_kill(kafka_bootstrap, topic, out, options, publisher) -> dict:
    """Once the replay is over, a second run from the committed offsets to the topic's end; its summary."""
    assert publisher.wait(timeout=120) == 0
    second = start_stream(kafka_bootstrap, topic, out, *options, "--stop-when-idle", "4s")
    finish(second, out)
    assert "resuming from committed offsets" in Path(f"{out}.log").read_text()
    return summary(out)


def test_stream_final_bars_equal_backfill_with_disorder_and_late_data(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap)  # two partitions; the bundled symbol fills one, the other stays idle
    replay(kafka_bootstrap, topic, "--disorder", "2s", "--late-fraction", "0.01", "--late-by", "5m", "--seed", "7")
    out = tmp_path / "stream"
    # No --early here: catching up at full speed keeps many windows open, each firing every period.
    finish(start_stream(kafka_bootstrap, topic, out, "--allowed-lateness", "10m", "--fill-gaps",
                        "--stop-when-idle", "4s"), out)
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


def _synthetic_trades(path: Path, seconds: int, per_second: int, start_ms: int = 1_704_067_200_000) -> None:
    rows = []
    for i in range(seconds * per_second):
        t = start_ms + i * 1000 // per_second
        rows.append(f"{i},{100 + (i % 17) * 0.5},{1 + i % 3},{i},{i},{t},{'true' if i % 2 else 'false'},true\n")
    path.write_text("".join(rows))


def test_too_late_trades_and_stream_bars_account_exactly_for_batch_bars(kafka_bootstrap, tmp_path):
    trades = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    _synthetic_trades(trades, seconds=20 * 60, per_second=5)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    stream = start_stream(kafka_bootstrap, topic, out, "--allowed-lateness", "1m", "--watermark-delay", "2s",
                          "--stop-when-idle", "4s")
    # Paced, so the watermark moves on between a trade's window and its arrival five minutes later.
    replay(kafka_bootstrap, topic, "--speed", "150", "--late-fraction", "0.03", "--late-by", "5m", "--seed", "11",
           inputs=str(trades))
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


def first_arrival(bootstrap: str, topic: str, timeout_s: float = 180) -> tuple[float, int]:
    """(wall time, event time ms) of the topic's first message, as a reader sees it arrive: the
    anchor that maps a paced replay's event times to the wall clock."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}", "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.01)
            if message is not None and message.error() is None:
                return time.time(), message.timestamp()[1]
        raise AssertionError(f"no message reached {topic} in {timeout_s:.0f} s")
    finally:
        consumer.close()


def assert_panes_reach_disk_live(bootstrap, tmp_path, *runner_args, seconds: int = 60, startup_s: float = 120,
                                 until_running=None) -> None:
    """A replay paced at real time, the default 10 m allowed lateness: once the stream is live (its
    first EARLY pane is on disk), every window that ends while the replay still publishes has its
    ON_TIME pane on disk within the watermark delay + --flush-every + 10 s of its end. The stream
    then stops by itself, with the backfill's final bars. A stateful step holding the watermark
    back until the lateness has passed makes those panes wait ten minutes. ``until_running(stream)``
    returns once the runner runs the job, so that a slow start does not eat the replay."""
    trades = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    _synthetic_trades(trades, seconds=seconds, per_second=20)
    topic = new_topic(bootstrap, 2)  # the symbol fills one partition; the idle one must not hold time back
    out = tmp_path / "stream"
    watermark_delay_s, flush_s, interval_s = 5, 1, 5
    stream = start_stream(bootstrap, topic, out, "--interval", f"{interval_s}s", "--early", "1s", "--stop-when-idle", "6s",
                          *runner_args)
    if until_running:
        until_running(stream)
    with ThreadPoolExecutor(1) as pool:
        anchor = pool.submit(first_arrival, bootstrap, topic, startup_s)
        publisher = replay(bootstrap, topic, "--speed", "1", inputs=str(trades), wait=False)
        first_wall, first_ms = anchor.result()
    assert publisher.wait(timeout=seconds + 120) == 0, publisher.stdout.read()
    replay_done = time.time()
    finish(stream, out)
    bars = read_bars(str(out)).to_pylist()
    written = {path.name: path.stat().st_mtime for path in (out / "bars").rglob("*.parquet")}
    live_from = min(written.values())
    end_wall = {bar["window_start"]: first_wall + (bar["window_start"].timestamp() * 1000 - first_ms) / 1000 + interval_s
                for bar in bars}
    # A window is judged once the stream is live, and only if trades past its end + watermark delay were sent.
    judged = {w: end for w, end in end_wall.items() if live_from + interval_s <= end <= replay_done - watermark_delay_s}
    assert len(judged) >= 3, f"only {len(judged)} windows ended between the stream going live and the replay's end"
    on_time = {bar["window_start"]: written[bar["file"]] for bar in bars if bar["pane_timing"] == "ON_TIME"}
    delays = {w: on_time.get(w, math.inf) - end for w, end in judged.items()}
    bound = watermark_delay_s + flush_s + 10
    assert max(delays.values()) <= bound, f"ON_TIME panes reached disk these seconds after their window ended: {delays}"
    assert without_panes(final_bars(str(out))) == without_panes(backfill_bars(tmp_path, str(trades), "--interval",
                                                                               f"{interval_s}s"))
    assert summary(out)["reconciled"]


def test_panes_reach_disk_live_while_trades_flow(kafka_bootstrap, tmp_path):
    assert_panes_reach_disk_live(kafka_bootstrap, tmp_path, seconds=30)


def _committed(bootstrap, group, topic) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:  # retried while the broker creates its offsets topic
        return _retrying(lambda: consumer.committed([TopicPartition(topic, 0)], timeout=10), 30)[0].offset
    finally:
        consumer.close()


def test_killed_and_restarted_stream_ends_with_the_same_final_bars(kafka_bootstrap, tmp_path):
    trades = tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv"
    _synthetic_trades(trades, seconds=2 * 3600, per_second=2)
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    options = ("--allowed-lateness", "10m", "--commit-every", "10m")
    first = start_stream(kafka_bootstrap, topic, out, *options)
    publisher = replay(kafka_bootstrap, topic, "--speed", "1000", "--disorder", "2s", "--late-fraction", "0.01",
                       "--late-by", "5m", "--seed", "5", inputs=str(trades), wait=False)
    deadline = time.monotonic() + 120
    while _committed(kafka_bootstrap, topic, topic) <= 0:
        assert time.monotonic() < deadline, "the stream never committed an offset"
        time.sleep(0.2)
    kill_stream(first)
    killed_at = _committed(kafka_bootstrap, topic, topic)
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
    assert _committed(kafka_bootstrap, topic, topic) == run["records_in"], "drained: every record read is committed"


def test_stream_refuses_a_batch_runner_and_a_missing_prism(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    batch = cli("stream", "--kafka", kafka_bootstrap, "--topic", topic, "--out", str(tmp_path / "a"), "--runner", "direct")
    assert batch.returncode == 2 and "streaming semantics" in batch.stderr and "Traceback" not in batch.stderr
    missing = cli("stream", "--kafka", kafka_bootstrap, "--topic", topic, "--out", str(tmp_path / "b"),
                  "--prism-location", str(tmp_path / "no-prism"))
    assert missing.returncode == 2 and "Prism is not installed" in missing.stderr
    absent = cli("stream", "--kafka", kafka_bootstrap, "--topic", "no_such_topic", "--out", str(tmp_path / "c"))
    assert absent.returncode == 2 and "no_such_topic" in absent.stderr and "Traceback" not in absent.stderr


@pytest.mark.parametrize("value", ["soon", "-5s"])
def test_stream_rejects_bad_durations(kafka_bootstrap, tmp_path, value):
    result = cli("stream", "--kafka", kafka_bootstrap, "--out", str(tmp_path), f"--stop-when-idle={value}")
    assert result.returncode == 2 and "bad duration" in result.stderr
