"""A stream on the real local Flink cluster, killed and restarted again and again while trades
flow: the ``cryptobeam`` launcher killed with its process group, or the TaskManager killed under
the running job. Each restart resumes from the Kafka offsets the stream committed once its bars
were written; after the last round a run drains the topic, and the final bars must equal the
backfill's, none missing or doubled, with the accounting reconciled.

``CRYPTOBEAM_FLINK_RESTART_ROUNDS`` (default 2: one launcher kill, one TaskManager kill) sets the
number of kill-and-restart rounds; the kills alternate, launcher first."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.bar_tables import run_of
from runners.local_flink import LocalFlink
from tests.support.outputs import summary, without_panes
from tests.support.streams import (
    backfill_bars,
    committed_offset,
    finish,
    kill_stream,
    new_topic,
    on_flink,
    replay,
    start_stream,
    synthetic_trades,
)

ROUNDS = int(os.environ.get("CRYPTOBEAM_FLINK_RESTART_ROUNDS", "2"))
CHUNK_SECONDS = 5 * 60  # the feed is published in chunks of this much event time, paced
CHUNKS_PER_ROUND = 8  # at most this many chunks for a run to commit before it is killed
TRADES_PER_SECOND = 5
FEED_START_S = 1_704_067_200  # 2024-01-01, where tests.support.streams' synthetic trades start
SPEED = 120
OPTIONS = ("--allowed-lateness", "1m", "--commit-every", "1m", "--watermark-delay", "2s")


@pytest.fixture(scope="module")
def restart_cluster(tmp_path_factory):
    """A cluster of its own, since these tests kill its TaskManager. Short heartbeats let the
    JobManager see a killed TaskManager within seconds rather than Flink's default 50 s."""
    cluster = LocalFlink.start(
        tmp_path_factory.mktemp("flink-restarts"),
        die_with_parent=True,
        config={"heartbeat.interval": 1000, "heartbeat.timeout": 8000},
    )
    yield cluster
    cluster.stop()


def job_name(topic: str) -> str:
    return f"cryptobeam-stream {topic} {topic}"  # start_stream's group is the topic


def wait_until_job_runs(
    cluster: LocalFlink, stream, name: str, log: Path, since_ms: float, timeout_s: float = 180
) -> None:
    """Until the stream's Flink job, submitted after ``since_ms``, has every task running."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert stream.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        jobs = [
            job
            for job in cluster.rest("/jobs/overview")["jobs"]
            if job["name"] == name and job["start-time"] >= since_ms
        ]
        if any(
            job["state"] == "RUNNING" and job["tasks"]["running"] + job["tasks"]["finished"] == job["tasks"]["total"]
            for job in jobs
        ):
            return
        time.sleep(0.5)


class Feed:
    """The whole feed in one file (for the backfill), published to the topic chunk by chunk:
    each chunk's consecutive trades in a file named as the source expects."""

    def __init__(self, directory: Path, bootstrap: str, topic: str, chunks: int):
        self.bootstrap, self.topic = bootstrap, topic
        self.whole = directory / "whole" / "ETHUSDT-aggTrades-2024-01-01.csv"
        self.whole.parent.mkdir(parents=True)
        synthetic_trades(self.whole, seconds=chunks * CHUNK_SECONDS, per_second=TRADES_PER_SECOND)
        lines = self.whole.read_text().splitlines(keepends=True)
        self.trades = len(lines)
        per_chunk = CHUNK_SECONDS * TRADES_PER_SECOND
        self.chunks, self.published = [], 0
        for index in range(chunks):
            path = directory / f"chunk{index:03d}" / self.whole.name
            path.parent.mkdir()
            path.write_text("".join(lines[index * per_chunk : (index + 1) * per_chunk]))
            self.chunks.append(path)

    @property
    def published_until(self) -> float:
        """The event time (epoch seconds) up to which the feed is published."""
        return FEED_START_S + self.published * CHUNK_SECONDS

    def publish_next(self, *pace: str) -> None:
        assert self.chunks, "the feed ran out before the stream committed"
        self.published += 1
        replay(self.bootstrap, self.topic, *pace, "--disorder", "2s", "--seed", "3", inputs=str(self.chunks.pop(0)))

    def publish_rest(self) -> None:
        while self.chunks:
            self.publish_next()


def newest_window_written_since(out: Path, since_ms: float) -> float:
    """The latest window start (epoch seconds) in the bar files written after ``since_ms``."""
    newest = 0.0
    for path in (out / "bars").rglob("*.parquet") if (out / "bars").exists() else ():
        if path.stat().st_mtime * 1000 >= since_ms:
            starts = pq.read_table(path, columns=["window_start"]).column("window_start").to_pylist()
            newest = max([newest, *(start.timestamp() for start in starts)])
    return newest


def keep_publishing_until_committed_past(
    feed: Feed, out: Path, stream, committed_before: int, since_ms: float, timeout_s: float = 300
) -> int:
    """Publish the feed chunk by chunk, paced, each once the stream has written the bars of the
    previous one (so that its watermark moves on as it would live, however slow the machine),
    until the stream commits past ``committed_before``; the offset it committed."""
    log = Path(f"{out}.log")
    deadline = time.monotonic() + timeout_s
    while True:
        feed.publish_next("--speed", str(SPEED))
        published_until = feed.published_until - CHUNK_SECONDS / 2
        while newest_window_written_since(out, since_ms) < published_until:
            if (committed := committed_offset(feed.bootstrap, feed.topic, feed.topic)) > committed_before:
                return committed
            assert stream.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no commit past offset {committed_before} in {timeout_s:.0f} s"
            time.sleep(0.5)
        if (committed := committed_offset(feed.bootstrap, feed.topic, feed.topic)) > committed_before:
            return committed


def kill_round(cluster: LocalFlink, feed: Feed, out: Path, kill: str, committed_before: int) -> dict:
    """Start the stream, publish the feed paced until the stream has committed past
    ``committed_before``, then kill it (``launcher``) or its TaskManager (``taskmanager``)."""
    bootstrap, topic = feed.bootstrap, feed.topic
    log = Path(f"{out}.log")
    started, since_ms = time.monotonic(), time.time() * 1000
    stream = start_stream(bootstrap, topic, out, *OPTIONS, *on_flink(cluster))
    wait_until_job_runs(cluster, stream, job_name(topic), log, since_ms)
    running_after_s = time.monotonic() - started
    committed = keep_publishing_until_committed_past(feed, out, stream, committed_before, since_ms)
    result = {
        "kill": kill,
        "job_running_after_s": round(running_after_s, 1),
        "committed_before": committed_before,
        "committed_at_kill": committed,
    }
    if kill == "launcher":
        kill_stream(stream)
        result["launcher_exit"] = stream.returncode
    else:
        cluster.kill_taskmanager()
        try:  # the job fails without its TaskManager, and the launcher reports it and exits
            result["launcher_exit"] = stream.wait(timeout=120)
        except Exception:
            kill_stream(stream)
            result["launcher_exit"] = "killed: it did not exit by itself"
        cluster.start_taskmanager(die_with_parent=True)
    result["job_states_after_kill"] = sorted(
        job["state"]
        for job in cluster.rest("/jobs/overview")["jobs"]
        if job["name"] == job_name(topic) and job["start-time"] >= since_ms
    )
    result["round_s"] = round(time.monotonic() - started, 1)
    return result


def finals_per_run(out: Path) -> Counter:
    """How many final panes each (run, bar) has: a run writes one per bar."""
    return Counter(
        (run_of(bar["file"]), bar["symbol"], bar["window_start"])
        for bar in read_bars(str(out)).to_pylist()
        if bar["is_final"]
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_killed_and_restarted_flink_stream_ends_with_the_backfill_bars(restart_cluster, kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    feed = Feed(tmp_path, kafka_bootstrap, topic, CHUNKS_PER_ROUND * ROUNDS + 2)
    out = tmp_path / "stream"
    kills = ["launcher" if index % 2 == 0 else "taskmanager" for index in range(ROUNDS)]
    rounds, committed = [], 0
    try:
        for kill in kills:
            rounds.append(kill_round(restart_cluster, feed, out, kill, committed))
            committed = rounds[-1]["committed_at_kill"]
        feed.publish_rest()
        committed = committed_offset(kafka_bootstrap, topic, topic)  # a killed run may have committed after the check
        last = start_stream(
            kafka_bootstrap,
            topic,
            out,
            *OPTIONS,
            *on_flink(restart_cluster),
            "--stop-when-idle",
            "4s",
        )
        finish(last, out, timeout=300)
    finally:
        restart_cluster.cancel_running_jobs()
        print(json.dumps(rounds, indent=1))
        (tmp_path / "rounds.json").write_text(json.dumps(rounds))
    run = summary(out)
    assert run["reconciled"], run["problems"]
    assert run["records_in"] == feed.trades - committed, "the last run re-read only from the committed offset"
    assert without_panes(final_bars(str(out))) == without_panes(backfill_bars(tmp_path, str(feed.whole)))
    per_run = finals_per_run(out)
    assert set(per_run.values()) == {1}, "a run wrote a bar's final pane twice"
    assert len({run_id for run_id, _symbol, _start in per_run}) == ROUNDS + 1, "every run wrote bars"
    jobs = restart_cluster.rest("/jobs/overview")["jobs"]
    assert not {job["state"] for job in jobs} & {"RUNNING", "RESTARTING"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_new_run_cancels_the_previous_runs_job_before_submitting(restart_cluster, kafka_bootstrap, tmp_path):
    """Two runs of one stream (topic and group) must never read side by side: the second cancels
    the first's Flink job, which a dead launcher could not, and only then submits its own."""
    topic = new_topic(kafka_bootstrap, 1)
    out = tmp_path / "stream"
    flink = on_flink(restart_cluster)
    since_ms = time.time() * 1000
    first = start_stream(kafka_bootstrap, topic, out, *OPTIONS, *flink)
    try:
        wait_until_job_runs(restart_cluster, first, job_name(topic), Path(f"{out}.log"), since_ms)
        [previous] = [
            job["jid"]
            for job in restart_cluster.rest("/jobs/overview")["jobs"]
            if job["name"] == job_name(topic) and job["state"] == "RUNNING"
        ]
        second = start_stream(kafka_bootstrap, topic, tmp_path / "second", *OPTIONS, *flink, "--stop-when-idle", "2s")
        finish(second, tmp_path / "second", timeout=300)
        assert first.wait(timeout=60) != 0, "the first run's job was cancelled under it"
    finally:
        if first.poll() is None:
            kill_stream(first)
        restart_cluster.cancel_running_jobs()
    assert f"cancelled the previous run's Flink job {previous}" in Path(f"{tmp_path / 'second'}.log").read_text()
    states = {job["jid"]: job["state"] for job in restart_cluster.rest("/jobs/overview")["jobs"]}
    assert states[previous] == "CANCELED"
