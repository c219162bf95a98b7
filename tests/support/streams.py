"""Streams on the test session's real Kafka broker: topics, paced replays, streams in their own
process group (so that a test can kill one together with its runner), and the backfill of the same
trades that a stream's final bars must equal."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.kafka_source import retrying_coordinator_call
from runners.local_kafka import create_topics
from tests.support.commands import cli
from tests.support.outputs import summary, without_panes
from tests.support.paths import BUNDLED, CLI


def new_topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"trades_{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {name: partitions})
    return name


def replay(bootstrap, topic, *extra, inputs=BUNDLED, source="binance-aggtrades", wait=True):
    command = [
        CLI,
        "replay",
        "--source",
        source,
        "--input",
        inputs,
        "--kafka",
        bootstrap,
        "--topic",
        topic,
        "--no-progress",
        *extra,
    ]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def start_stream(bootstrap, topic, out, *extra, group=None):
    """A stream in its own process group, so a test can kill it together with its Prism."""
    log = open(f"{out}.log", "a")
    return subprocess.Popen(
        [
            CLI,
            "stream",
            "--kafka",
            bootstrap,
            "--topic",
            topic,
            "--group",
            group or topic,
            "--out",
            str(out),
            "--flush-every",
            "1s",
            "--no-progress",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process, out, timeout=240) -> None:
    returncode = process.wait(timeout=timeout)
    assert returncode == 0, Path(f"{out}.log").read_text()[-3000:]


def wait_for_bar_files(stream, out, timeout_s: float) -> None:
    """Until the running stream has written its first bar file."""
    deadline = time.monotonic() + timeout_s
    while not (out / "bars").exists() or not list((out / "bars").rglob("*.parquet")):
        assert time.monotonic() < deadline and stream.poll() is None, Path(f"{out}.log").read_text()[-2000:]
        time.sleep(0.2)


def kill_stream(stream) -> None:
    os.killpg(stream.pid, signal.SIGKILL)  # the stream and its Prism die mid-flight, the replay may go on
    stream.wait(timeout=30)


def killed_after_its_first_commit(kafka_bootstrap, topic, out, options, trades: Path) -> subprocess.Popen:
    """A stream of ``options`` on the topic, fed a fast replay of ``trades`` with disorder and late
    trades, killed (with its runner) once it has committed an offset; returns the replay, which may
    still be publishing."""
    stream = start_stream(kafka_bootstrap, topic, out, *options)
    publisher = replay(
        kafka_bootstrap,
        topic,
        "--speed",
        "1000",
        "--disorder",
        "2s",
        "--late-fraction",
        "0.01",
        "--late-by",
        "5m",
        "--seed",
        "5",
        inputs=str(trades),
        wait=False,
    )
    deadline = time.monotonic() + 120
    while committed_offset(kafka_bootstrap, topic, topic) <= 0:
        assert time.monotonic() < deadline and stream.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.2)
    kill_stream(stream)
    return publisher


def resume_after_kill(kafka_bootstrap, topic, out, options, publisher) -> dict:
    """Once the replay is over, a second run from the committed offsets to the topic's end; its summary."""
    assert publisher.wait(timeout=120) == 0
    second = start_stream(kafka_bootstrap, topic, out, *options, "--stop-when-idle", "4s")
    finish(second, out)
    assert "resuming from committed offsets" in Path(f"{out}.log").read_text()
    return summary(out)


def backfill_bars(tmp_path, inputs=BUNDLED, *extra, source="binance-aggtrades") -> list[dict]:
    out = tmp_path / "backfill"
    result = cli("backfill", "--source", source, "--input", inputs, "--out", str(out), "--no-progress", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return final_bars(str(out))


def synthetic_trades(path: Path, seconds: int, per_second: int, start_ms: int = 1_704_067_200_000) -> None:
    """A Binance aggTrades CSV at a steady rate, ids counting from 0."""
    rows = []
    for i in range(seconds * per_second):
        t = start_ms + i * 1000 // per_second
        rows.append(f"{i},{100 + (i % 17) * 0.5},{1 + i % 3},{i},{i},{t},{'true' if i % 2 else 'false'},true\n")
    path.write_text("".join(rows))


def on_flink(cluster) -> tuple[str, ...]:
    """The command's options that run a backfill or a stream on a local Flink cluster."""
    return ("--runner", "flink", "--flink-master", cluster.flink_master)


def committed_offset(bootstrap, group, topic) -> int:
    """The group's committed offset on the topic's partition 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:  # retried while the broker creates its offsets topic
        committed = retrying_coordinator_call(lambda: consumer.committed([TopicPartition(topic, 0)], timeout=10), 30)
        return committed[0].offset
    finally:
        consumer.close()


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


def assert_panes_reach_disk_live(
    bootstrap, tmp_path, *runner_args, seconds: int = 60, startup_s: float = 120, until_running=None
) -> None:
    """A replay paced at real time, the default 10 m allowed lateness: once the stream is live (its
    first EARLY pane is on disk), every window that ends while the replay still publishes has its
    ON_TIME pane on disk within the watermark delay + --flush-every + 10 s of its end. The stream
    then stops by itself, with the backfill's final bars. A stateful step holding the watermark
    back until the lateness has passed makes those panes wait ten minutes. ``until_running(stream)``
    returns once the runner runs the job, so that a slow start does not eat the replay."""
    trades = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    synthetic_trades(trades, seconds=seconds, per_second=20)
    topic = new_topic(bootstrap, 2)  # the symbol fills one partition; the idle one must not hold time back
    out = tmp_path / "stream"
    watermark_delay_s, flush_s, interval_s = 5, 1, 5
    stream = start_stream(
        bootstrap, topic, out, "--interval", f"{interval_s}s", "--early", "1s", "--stop-when-idle", "6s", *runner_args
    )
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
    end_wall = {
        bar["window_start"]: first_wall + (bar["window_start"].timestamp() * 1000 - first_ms) / 1000 + interval_s
        for bar in bars
    }
    # A window is judged once the stream is live, and only if trades past its end + watermark delay were sent.
    judged = {w: end for w, end in end_wall.items() if live_from + interval_s <= end <= replay_done - watermark_delay_s}
    assert len(judged) >= 3, f"only {len(judged)} windows ended between the stream going live and the replay's end"
    on_time = {bar["window_start"]: written[bar["file"]] for bar in bars if bar["pane_timing"] == "ON_TIME"}
    delays = {w: on_time.get(w, math.inf) - end for w, end in judged.items()}
    bound = watermark_delay_s + flush_s + 10
    assert max(delays.values()) <= bound, f"ON_TIME panes reached disk these seconds after their window ended: {delays}"
    assert without_panes(final_bars(str(out))) == without_panes(
        backfill_bars(tmp_path, str(trades), "--interval", f"{interval_s}s")
    )
    assert summary(out)["reconciled"]
