"""Flink benchmark: stream throughput at parallelism 1 and 2, and backfill time on Flink against the
in-process (direct) runner. Starts and stops its own Kafka broker and Flink cluster.

    .venv/bin/python benchmarks/flink.py                                   # quick: 200k trades each
    .venv/bin/python benchmarks/flink.py --stream-trades 1500000 --backfill-trades 10000000

**Stream.** ``--stream-trades`` synthetic trades (4 symbols, one day) are published before the
stream starts to one topic of ``--partitions`` partitions, two symbols a partition. Each
parallelism then reads the whole topic with a consumer group of its own:
``cryptobeam stream --runner flink --parallelism P --stop-when-idle``. The trades the stream has
parsed (its ``records_in`` counter, which Flink's REST API shows per subtask, refreshed every
second here) are sampled twice a second, which splits the run into:

- **start-up:** launch -> first trades parsed (job server, submission, workers);
- **read:** first trades parsed -> every trade parsed. ``trades/s`` is the published trades
  over this phase; ``steady trades/s`` is the slope from 10% to 90% of them (no ramp-up, no tail).
  Flink's back-pressure keeps the reader at most a few buffers ahead of the bars' stages, so the
  parse rate is the rate the pipeline takes trades in;
- **drain:** every trade parsed -> the process exits, less the ``--stop-when-idle`` wait:
  the final panes fire and are written, and the job ends.

``end-to-end trades/s`` divides the trades by read + drain. Every round must read every trade,
reconcile, and write final bars that count each trade once.

**Backfill.** ``--backfill-trades`` synthetic trades (3 symbols, one day, Parquet) are turned into
1-minute bars by ``cryptobeam backfill`` on the direct runner and on Flink at each parallelism;
every run's final bars must equal the direct runner's.

**CPU per process.** /proc is sampled every 0.5 s; each phase's CPU seconds are summed per group
of processes (Flink TaskManager, JobManager, Beam's job server, the Kafka broker, the
``cryptobeam`` process with its LOOPBACK Python workers, PROCESS Python workers) and shown as cores
used on average. ``other`` is the rest of the machine (not this benchmark): the machine is shared.
``uptime``'s load is recorded beside each round.

Prints tables and writes JSON to benchmarks/results/flink-<environment>-<stream>-<backfill>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.synthetic import synthetic_trades, write_synthetic_parquet  # noqa: E402
from io_connectors.avro_wire import encode  # noqa: E402
from io_connectors.bar_reader import final_bars  # noqa: E402
from io_connectors.kafka_producer import PRODUCER_SETTINGS  # noqa: E402
from runners.local_flink import LocalFlink  # noqa: E402
from runners.local_kafka import LocalKafka, create_topics  # noqa: E402

CLI = str(Path(sys.executable).parent / "cryptobeam")
STREAM_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
BACKFILL_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
SAMPLE_S = 0.5
FLINK_CONFIG = {"metrics.fetcher.update-interval": 1000}
"""The REST API refreshes its metrics every 10 s by default: too coarse to time a read phase."""
BAR_COLUMNS = ("exchange", "symbol", "window_start", "open", "high", "low", "close", "volume", "trade_count")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- CPU per process


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds so far) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all but idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICKS_PER_S


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class CpuSampler(threading.Thread):
    """Samples every process's CPU time; ``mark()`` snapshots it, ``cores()`` compares two snapshots.

    A process's group is decided by its command line (the Kafka and Flink work dirs, Beam's job
    server jar, Python SDK workers) or by descent from the benchmark's ``cryptobeam`` process."""

    GROUPS = (
        "Flink TaskManager",
        "Flink JobManager",
        "Beam job server",
        "Kafka broker",
        "cryptobeam (+LOOPBACK workers)",
        "Python workers (PROCESS)",
    )

    def __init__(self, kafka_dir: Path, flink_dir: Path):
        super().__init__(daemon=True)
        self._kafka_dir, self._flink_dir = str(kafka_dir), str(flink_dir)
        self._latest: dict[int, tuple[str, float]] = {}  # pid -> (group, CPU s); a dead pid keeps its last
        self._groups: dict[int, str] = {}
        self._cli_pid: int | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._own = os.getpid()

    def watch_cli(self, pid: int | None) -> None:
        self._cli_pid = pid

    def _group(self, pid: int, parents: dict[int, int]) -> str | None:
        command = _cmdline(pid)
        if self._flink_dir in command:
            return "Flink TaskManager" if "TaskManagerRunner" in command else "Flink JobManager"
        if self._kafka_dir in command:
            return "Kafka broker"
        ancestor = parents.get(pid, 0)
        while ancestor > 1:  # only descendants of this benchmark's processes: the machine runs other Flink jobs
            if ancestor == self._cli_pid or pid == self._cli_pid:
                return "Beam job server" if "job-server" in command else "cryptobeam (+LOOPBACK workers)"
            if self._groups.get(ancestor) == "Flink TaskManager":
                return "Python workers (PROCESS)"
            if ancestor == self._own:
                return "benchmark (this script)"
            ancestor = parents.get(ancestor, 0)
        return "cryptobeam (+LOOPBACK workers)" if pid == self._cli_pid else None

    def sample(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(entry)
                if stat is not None:
                    stats[int(entry)] = stat
        parents = {pid: parent for pid, (parent, _) in stats.items()}
        with self._lock:
            for pid, (_, cpu) in stats.items():
                group = self._groups.get(pid)
                if group is None or group == "cryptobeam (+LOOPBACK workers)":  # a child may exec the job server
                    group = self._group(pid, parents)
                    if group is None:
                        continue
                    self._groups[pid] = group
                self._latest[pid] = (group, cpu)
            self._latest[0] = ("machine", _machine_busy_s())

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def mark(self) -> tuple[float, dict[int, tuple[str, float]]]:
        self.sample()
        with self._lock:
            return time.monotonic(), dict(self._latest)

    @staticmethod
    def cores(start: tuple[float, dict], end: tuple[float, dict]) -> dict[str, float]:
        """Average cores each group used between two marks; ``other`` is the rest of the machine."""
        (t0, before), (t1, after) = start, end
        seconds: dict[str, float] = {}
        for pid, (group, cpu) in after.items():
            if pid == 0:
                continue
            previous = before.get(pid)
            used = cpu - (previous[1] if previous and previous[0] == group else 0.0)
            seconds[group] = seconds.get(group, 0.0) + max(used, 0.0)
        machine = after[0][1] - before[0][1]
        ours = sum(seconds.values())
        span = max(t1 - t0, 1e-9)
        shares = {group: round(seconds.get(group, 0.0) / span, 2) for group in CpuSampler.GROUPS}
        shares["benchmark (this script)"] = round(seconds.get("benchmark (this script)", 0.0) / span, 2)
        shares["other"] = round(max(machine - ours, 0.0) / span, 2)
        shares["machine"] = round(machine / span, 2)
        return shares


# ----------------------------------------------------------------------------- Flink REST


def new_job(cluster: LocalFlink, known: set[str]) -> dict | None:
    """The cluster's job that is not in ``known``, if one has been submitted."""
    try:
        jobs = cluster.rest("/jobs/overview")["jobs"]
    except (OSError, ValueError, KeyError):
        return None
    fresh = [job for job in jobs if job["jid"] not in known]
    return max(fresh, key=lambda job: job["start-time"]) if fresh else None


def records_in(cluster: LocalFlink, jid: str, vertices: dict) -> int | None:
    """The job's ``records_in`` counter summed over subtasks (None until a subtask reports it).
    ``vertices`` maps each vertex id to whether it counts ``records_in``: once one does, only it
    is asked again (light on the JobManager), its metric list included, since a subtask's counter
    appears only once that subtask has parsed its first trades."""
    total, seen = 0, False
    try:
        if not vertices:
            for vertex in cluster.rest(f"/jobs/{jid}")["vertices"]:
                vertices[vertex["id"]] = None
        counting = [vertex_id for vertex_id, counts in vertices.items() if counts]
        for vertex_id in counting or [vertex_id for vertex_id, counts in vertices.items() if counts is None]:
            listed = [m["id"] for m in cluster.rest(f"/jobs/{jid}/vertices/{vertex_id}/metrics")]
            ids = [m for m in listed if m.endswith(".cryptobeam_records_in")]
            if not ids:
                continue
            vertices[vertex_id] = True
            values = cluster.rest(f"/jobs/{jid}/vertices/{vertex_id}/metrics?get={','.join(ids)}")
            total += sum(int(float(m["value"])) for m in values)
            seen = True
    except (OSError, ValueError, KeyError):
        return None
    return total if seen else None


class JobWatcher(threading.Thread):
    """Follows the cluster's next job: when it runs, and the trades it has parsed over time. CPU
    marks are taken as the first trades are parsed and as the count reaches ``target``."""

    def __init__(self, cluster: LocalFlink, cpu: CpuSampler, target: int):
        super().__init__(daemon=True)
        self._cluster, self._cpu, self._target = cluster, cpu, target
        self._known = {job["jid"] for job in cluster.rest("/jobs/overview")["jobs"]}
        self.running_at: float | None = None
        self.jid: str | None = None
        self.progress: list[tuple[float, int]] = []  # (monotonic s, trades parsed)
        self.marks: dict[str, tuple] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        vertices: dict = {}
        while not self._stop_event.wait(SAMPLE_S):
            if self.jid is None:
                job = new_job(self._cluster, self._known)
                if job is None:
                    continue
                self.jid = job["jid"]
            if self.running_at is None and self._state() == "RUNNING":
                self.running_at = time.monotonic()
            count = records_in(self._cluster, self.jid, vertices)
            if count is not None and (not self.progress or count != self.progress[-1][1]):
                self.progress.append((time.monotonic(), count))
                if count > 0 and "read_start" not in self.marks:
                    self.marks["read_start"] = self._cpu.mark()
                if count >= self._target and "read_end" not in self.marks:
                    self.marks["read_end"] = self._cpu.mark()

    def _state(self) -> str | None:
        try:
            return self._cluster.rest(f"/jobs/{self.jid}")["state"]
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def job_seconds(self) -> float | None:
        """How long Flink ran the job, from its submission to its end."""
        try:
            return round(self._cluster.rest(f"/jobs/{self.jid}")["duration"] / 1000, 1)
        except (OSError, ValueError, KeyError):
            return None

    def first_reaching(self, n: float) -> tuple[float, int] | None:
        """The first sample (time, count) whose count is at least ``n``."""
        return next(((t, count) for t, count in self.progress if count >= n), None)

    def read_cores(self) -> dict[str, float] | None:
        if {"read_start", "read_end"} <= set(self.marks):
            return CpuSampler.cores(self.marks["read_start"], self.marks["read_end"])
        return None


# ----------------------------------------------------------------------------- runs


def publish_trades(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    """Publishes ``n`` synthetic trades in event-time order, symbol i to partition i mod
    ``partitions`` so that the partitions hold as many each; returns the seconds it took."""
    trades = synthetic_trades(n, list(STREAM_SYMBOLS))
    trades = trades.set_column(
        trades.schema.get_field_index("event_time"), "event_time", trades["event_time"].cast(pa.int64())
    ).sort_by("event_time")
    create_topics(bootstrap, {topic: partitions})
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    failed = []
    began = time.monotonic()
    for record in trades.to_pylist():
        partition = STREAM_SYMBOLS.index(record["symbol"]) % partitions
        while True:
            try:
                producer.produce(
                    topic,
                    value=encode(record, "trade"),
                    key=f"{record['exchange']}:{record['symbol']}",
                    partition=partition,
                    timestamp=record["event_time"] // 1000,
                    on_delivery=lambda error, _m: failed.append(error) if error else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    undelivered = producer.flush(120)
    if undelivered or failed:
        raise SystemExit(f"{undelivered + len(failed)} trades were not delivered: {failed[:1]}")
    return time.monotonic() - began


class RunFailed(RuntimeError):
    """A ``cryptobeam`` command failed or outlived its time: its round is reported as failed."""


def run_command(
    command: list[str], log_path: Path, cpu: CpuSampler, cluster: LocalFlink | None, trades: int, timeout_s: float
) -> dict:
    """Runs one ``cryptobeam`` command, following its Flink job (if any) and CPU per process."""
    watcher = JobWatcher(cluster, cpu, trades) if cluster is not None else None
    load = load_average()
    start = cpu.mark()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cpu.watch_cli(process.pid)
    if watcher:
        watcher.start()
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the CLI, its job server and LOOPBACK workers
        returncode = process.wait()
        raise RunFailed(f"{command[1]} still ran after {timeout_s:.0f} s and was killed; see {log_path}") from None
    finally:
        end = cpu.mark()
        cpu.watch_cli(None)
        if watcher:
            watcher.stop()
        if cluster is not None:
            cluster.cancel_running_jobs()  # a job left behind would skew the next round
    if returncode != 0:
        raise RunFailed(
            f"{command[1]} exited {returncode}; its log ends: " + log_path.read_text(errors="replace")[-1500:]
        )
    return {
        "start": start,
        "end": end,
        "watcher": watcher,
        "load": load,
        "flink_job_s": watcher.job_seconds() if watcher else None,
        "summary": json.loads((Path(command[command.index("--out") + 1]) / "_SUMMARY.json").read_text()),
    }


def flink_options(cluster: LocalFlink, parallelism: int, environment: str) -> list[str]:
    return [
        "--runner",
        "flink",
        "--flink-master",
        cluster.flink_master,
        "--parallelism",
        str(parallelism),
        "--environment",
        environment,
    ]


def stream_round(
    kafka: LocalKafka,
    cluster: LocalFlink,
    cpu: CpuSampler,
    topic: str,
    trades: int,
    parallelism: int,
    environment: str,
    idle_s: float,
    work: Path,
    timeout_s: float,
) -> dict:
    out = work / f"stream-p{parallelism}"
    command = [
        CLI,
        "stream",
        "--kafka",
        kafka.bootstrap,
        "--topic",
        topic,
        "--group",
        f"bench-p{parallelism}-{uuid.uuid4().hex[:6]}",
        "--out",
        str(out),
        "--interval",
        "1m",
        *flink_options(cluster, parallelism, environment),
        "--stop-when-idle",
        f"{idle_s:g}s",
        "--no-progress",
    ]
    run = run_command(command, work / f"stream-p{parallelism}.log", cpu, cluster, trades, timeout_s)
    watcher: JobWatcher = run["watcher"]
    launched, exited = run["start"][0], run["end"][0]
    first, done = watcher.first_reaching(1), watcher.first_reaching(trades)
    if first is None or done is None:
        raise SystemExit(f"the stream's parsed-trades counter never reached {trades}: {watcher.progress[-3:]}")
    (t10, c10), (t90, c90) = watcher.first_reaching(0.1 * trades), watcher.first_reaching(0.9 * trades)
    read_s = done[0] - first[0]
    drain_s = max(exited - done[0] - idle_s, 0.0)
    summary, bars = run["summary"], final_bars(str(out))
    return {
        "parallelism": parallelism,
        "environment": environment,
        "trades": trades,
        "load_before": run["load"],
        "load_after": load_average(),
        "job_running_after_s": round(watcher.running_at - launched, 1) if watcher.running_at else None,
        "startup_s": round(first[0] - launched, 1),
        "read_s": round(read_s, 1),
        "drain_s": round(drain_s, 1),
        "idle_wait_s": idle_s,
        "wall_s": round(exited - launched, 1),
        "trades_per_s": round(trades / read_s),
        "steady_trades_per_s": round((c90 - c10) / max(t90 - t10, 1e-9)),
        "end_to_end_trades_per_s": round(trades / (read_s + drain_s)),
        "records_in": summary["records_in"],
        "reconciled": summary["reconciled"],
        "trades_in_final_bars": summary["trades_in_final_bars"],
        "final_bars": len(bars),
        "final_bar_trades": sum(bar["trade_count"] for bar in bars),
        "ok": (
            summary["records_in"] == trades
            and summary["reconciled"]
            and sum(bar["trade_count"] for bar in bars) == trades
        ),
        "cores_during_read": watcher.read_cores(),
        "cores_whole_run": CpuSampler.cores(run["start"], run["end"]),
        "flink_job_s": run["flink_job_s"],
        "progress": [(round(t - launched, 2), count) for t, count in watcher.progress],
    }


def comparable(bars: list[dict]) -> list[tuple]:
    """Final bars by key, with the fields every runner must agree on; sums rounded for the
    order in which a parallel combine adds them."""
    rows = []
    for bar in bars:
        row = [bar[column] for column in BAR_COLUMNS]
        row[BAR_COLUMNS.index("volume")] = round(row[BAR_COLUMNS.index("volume")], 6)
        rows.append(tuple(row))
    return sorted(rows)


def backfill_round(
    cpu: CpuSampler,
    cluster: LocalFlink | None,
    inputs: Path,
    trades: int,
    parallelism: int | None,
    environment: str,
    work: Path,
    timeout_s: float,
    batch_rows: int | None = None,
) -> tuple[dict, list[tuple]]:
    name = "direct" if cluster is None else f"flink-p{parallelism}"
    out = work / f"backfill-{name}"
    command = [
        CLI,
        "backfill",
        "--source",
        "parquet",
        "--input",
        str(inputs),
        "--interval",
        "1m",
        "--out",
        str(out),
        "--no-progress",
        *([] if cluster is None else flink_options(cluster, parallelism, environment)),
        *([] if batch_rows is None else ["--batch-rows", str(batch_rows)]),
    ]
    run = run_command(command, work / f"backfill-{name}.log", cpu, cluster, trades, timeout_s)
    watcher: JobWatcher | None = run["watcher"]
    launched, exited = run["start"][0], run["end"][0]
    first = watcher.first_reaching(1) if watcher else None
    summary, bars = run["summary"], final_bars(str(out))
    shutil.rmtree(out, ignore_errors=True)
    result = {
        "runner": "direct" if cluster is None else "flink",
        "parallelism": parallelism,
        "batch_rows": batch_rows,
        "environment": None if cluster is None else environment,
        "trades": trades,
        "load_before": run["load"],
        "load_after": load_average(),
        "wall_s": round(exited - launched, 1),
        "trades_per_s": round(trades / (exited - launched)),
        "job_running_after_s": round(watcher.running_at - launched, 1) if watcher and watcher.running_at else None,
        "first_trades_after_s": round(first[0] - launched, 1) if first else None,
        "records_in": summary["records_in"],
        "reconciled": summary["reconciled"],
        "final_bars": len(bars),
        "cores_whole_run": CpuSampler.cores(run["start"], run["end"]),
        "flink_job_s": run["flink_job_s"],
        "progress": [(round(t - launched, 2), count) for t, count in watcher.progress] if watcher else None,
    }
    return result, comparable(bars)


# ----------------------------------------------------------------------------- report

SHOWN_GROUPS = {
    "TaskManager": "Flink TaskManager",
    "JobManager": "Flink JobManager",
    "job server": "Beam job server",
    "Kafka": "Kafka broker",
    "cryptobeam": "cryptobeam (+LOOPBACK workers)",
    "PROCESS workers": "Python workers (PROCESS)",
    "other": "other",
    "machine": "machine",
}


def cores_cells(cores: dict | None) -> list[str]:
    return [f"{cores[group]:.2f}" if cores else "?" for group in SHOWN_GROUPS.values()]


def print_stream(rounds: list[dict], partitions: int, console: Console) -> None:
    table = Table(
        title=f"stream on Flink: {rounds[0]['trades']:,} trades pre-published to {partitions} partitions "
        "(cores = average CPU cores used during the read)"
    )
    for column in (
        "parallelism",
        "start-up s",
        "read s",
        "trades/s",
        "steady trades/s",
        "drain s",
        "end-to-end trades/s",
        "ok",
        *SHOWN_GROUPS,
        "load 1m before/after",
    ):
        table.add_column(column, justify="right")
    for r in rounds:
        table.add_row(
            str(r["parallelism"]),
            f"{r['startup_s']:.1f}",
            f"{r['read_s']:.1f}",
            f"{r['trades_per_s']:,}",
            f"{r['steady_trades_per_s']:,}",
            f"{r['drain_s']:.1f}",
            f"{r['end_to_end_trades_per_s']:,}",
            "yes" if r["ok"] else "NO",
            *cores_cells(r["cores_during_read"]),
            f"{r['load_before'].split()[0]} / {r['load_after'].split()[0]}",
        )
    console.print(table)


def print_backfill(rounds: list[dict], console: Console) -> None:
    table = Table(
        title=f"backfill: {rounds[0]['trades']:,} trades, 3 symbols, 1 day, 1m bars "
        "(cores = average CPU cores used over the run)"
    )
    for column in (
        "runner",
        "wall s",
        "trades/s",
        "vs direct",
        "job running after s",
        "first trades after s",
        "Flink job s",
        "bars equal direct",
        *SHOWN_GROUPS,
        "load 1m before/after",
    ):
        table.add_column(column, justify="right")
    direct_s = rounds[0]["wall_s"]
    for r in rounds:
        runner = "direct" if r["runner"] == "direct" else f"flink p={r['parallelism']}"
        table.add_row(
            runner,
            f"{r['wall_s']:.1f}",
            f"{r['trades_per_s']:,}",
            f"{r['wall_s'] / direct_s:.1f}x",
            "" if r["job_running_after_s"] is None else f"{r['job_running_after_s']:.1f}",
            "" if r["first_trades_after_s"] is None else f"{r['first_trades_after_s']:.1f}",
            "" if r["flink_job_s"] is None else f"{r['flink_job_s']:.1f}",
            "yes" if r["bars_equal_direct"] else "NO",
            *cores_cells(r["cores_whole_run"]),
            f"{r['load_before'].split()[0]} / {r['load_after'].split()[0]}",
        )
    console.print(table)


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream-trades", type=int, default=200_000, help="trades for the stream (0: no stream)")
    parser.add_argument("--backfill-trades", type=int, default=200_000, help="trades for the backfill (0: none)")
    parser.add_argument("--partitions", type=int, default=2, help="partitions of the stream's topic (at least 2)")
    parser.add_argument("--parallelisms", default="1,2", help="Flink parallelisms to run, e.g. 1,2")
    parser.add_argument(
        "--environment", default="LOOPBACK", choices=["LOOPBACK", "PROCESS"], help="where Flink runs the Python workers"
    )
    parser.add_argument("--stop-when-idle", type=float, default=5.0, help="the stream's --stop-when-idle, seconds")
    parser.add_argument(
        "--taskmanager-memory", default="1536m", help="the TaskManager's process size (LocalFlink's default: 1536m)"
    )
    parser.add_argument(
        "--managed-fraction",
        type=float,
        default=None,
        help="taskmanager.memory.managed.fraction (Flink's default: 0.4); less leaves more heap, "
        "which a backfill's large per-symbol-day elements need",
    )
    parser.add_argument(
        "--flink-batch-rows",
        type=int,
        default=50_000,
        help="the Flink backfills' --batch-rows: a batch of one symbol is one element, which Flink's "
        "batch sorter must hold in one sort buffer and its gRPC data plane in direct memory "
        "(the default 250,000 rows, about 35 MB, failed both at 10M trades)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="longest run of one command, seconds")
    args = parser.parse_args()
    if args.partitions < 2:
        raise SystemExit("--partitions must be at least 2")
    args.parallelisms = [int(p) for p in args.parallelisms.split(",")]
    return args


def run_rounds(args: argparse.Namespace, results: dict, save, work: Path) -> None:
    """Every round, each recorded (and saved) as it ends; a failed round is recorded as such."""
    kafka = LocalKafka.start(work / "kafka") if args.stream_trades else None
    cluster = None
    cpu = CpuSampler(work / "kafka", work / "flink")
    config = {
        **FLINK_CONFIG,
        **({"taskmanager.memory.managed.fraction": args.managed_fraction} if args.managed_fraction is not None else {}),
    }
    try:
        cluster = LocalFlink.start(
            work / "flink",
            slots=max(args.parallelisms),
            die_with_parent=True,
            taskmanager_memory=args.taskmanager_memory,
            config=config,
        )
        cpu.start()
        if args.stream_trades:
            topic = f"bench_trades_{uuid.uuid4().hex[:6]}"
            results["stream_publish_s"] = round(
                publish_trades(kafka.bootstrap, topic, args.stream_trades, args.partitions), 1
            )
            for parallelism in args.parallelisms:
                try:
                    results["stream"].append(
                        stream_round(
                            kafka,
                            cluster,
                            cpu,
                            topic,
                            args.stream_trades,
                            parallelism,
                            args.environment,
                            args.stop_when_idle,
                            work,
                            args.timeout,
                        )
                    )
                except RunFailed as failure:
                    results["stream"].append({"parallelism": parallelism, "failed": str(failure)})
                save()
                print(f"done: stream, parallelism {parallelism}", file=sys.stderr)
        if args.backfill_trades:
            inputs = work / "trades.parquet"
            write_synthetic_parquet(str(inputs), args.backfill_trades, BACKFILL_SYMBOLS)
            direct, expected = backfill_round(
                cpu, None, inputs, args.backfill_trades, None, args.environment, work, args.timeout
            )
            results["backfill"].append({**direct, "bars_equal_direct": True})
            save()
            for parallelism in args.parallelisms:
                try:
                    result, bars = backfill_round(
                        cpu,
                        cluster,
                        inputs,
                        args.backfill_trades,
                        parallelism,
                        args.environment,
                        work,
                        args.timeout,
                        args.flink_batch_rows,
                    )
                    results["backfill"].append({**result, "bars_equal_direct": bars == expected})
                except RunFailed as failure:
                    results["backfill"].append({"runner": "flink", "parallelism": parallelism, "failed": str(failure)})
                save()
                print(f"done: backfill on Flink, parallelism {parallelism}", file=sys.stderr)
    finally:
        cpu.stop()
        if cluster is not None:
            cluster.stop()
        if kafka is not None:
            kafka.stop()


def main() -> None:
    args = parse_args()
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "environment": args.environment,
        "partitions": args.partitions,
        "taskmanager_memory": args.taskmanager_memory,
        "managed_fraction": args.managed_fraction,
        "load_at_start": load_average(),
        "stream": [],
        "backfill": [],
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"flink-{args.environment.lower()}-{args.stream_trades}-{args.backfill_trades}.json"

    def save():
        path.write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory(prefix="flink-bench-") as tmp:
        run_rounds(args, results, save, Path(tmp))
    save()
    console = Console(width=240)
    for failed in [r for r in results["stream"] + results["backfill"] if "failed" in r]:
        console.print(f"[red]FAILED[/red] parallelism {failed['parallelism']}: {failed['failed']}")
    if [r for r in results["stream"] if "failed" not in r]:
        print_stream([r for r in results["stream"] if "failed" not in r], args.partitions, console)
    if results["backfill"]:
        print_backfill([r for r in results["backfill"] if "failed" not in r], console)
    print(f"written {path}")
    if not all(r.get("ok") for r in results["stream"]) or not all(
        r.get("bars_equal_direct") for r in results["backfill"]
    ):
        raise SystemExit("a round failed, lost or double-counted trades, or made bars unlike the direct runner's")


if __name__ == "__main__":
    main()
