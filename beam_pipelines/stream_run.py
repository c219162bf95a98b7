"""Running ``cryptobeam stream`` (``beam_pipelines.stream_command`` holds its options): the stream's
settings from its options, the pipeline on its runner, draining on Ctrl-C, the metrics endpoint,
and the summary, reconciled from the run's own files.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import apache_beam as beam
import pyarrow.dataset as ds
from apache_beam.options.pipeline_options import PortableOptions

from beam_pipelines.accounting import Accounting, counters_of
from beam_pipelines.cli_common import (
    EXIT_UNRECONCILED,
    PipelineFailed,
    PipelineLog,
    UserError,
    bar_spec_from_args,
    check_writable,
    instruments_from_args,
    lock_output,
    parse_duration_seconds,
    runner_profile_from_args,
    sink_targets_from_args,
    summary_table,
    write_error_log,
)
from beam_pipelines.outputs import OutputTargets
from beam_pipelines.stream import StreamConfig, build_stream
from beam_pipelines.validate_chain_output import rows_in_files, token_activity_on_disk
from beam_pipelines.written_files import written_in_files
from io_connectors.atomic_files import write_json_atomically
from io_connectors.bar_tables import run_of
from io_connectors.kafka_source import KafkaReadConfig, partition_starts, request_drain, reset_drain
from io_connectors.paths import is_remote
from io_connectors.prometheus_metrics import MetricsPortInUse, StreamMetricsEndpoint
from runners.gc_tuning import collect_rarely
from runners.local_flink import FlinkError, cancel_jobs_named
from transforms.computations import counted_table, output_tables, table_named
from transforms.computations.token_flows import TOKEN_ACTIVITY
from transforms.feed_status import FEED_STATUS_COUNTERS
from transforms.token_transfers import TOKEN_TRANSFER_COUNTERS

if TYPE_CHECKING:
    from rich.console import Console


def stream_config(args):
    spec = bar_spec_from_args(args)
    sinks = sink_targets_from_args(args, streaming=True)
    seconds = {
        name: parse_duration_seconds(getattr(args, name))
        for name in ("watermark_delay", "idle_after", "flush_every", "commit_every")
    }
    if seconds["flush_every"] <= 0 or seconds["idle_after"] <= 0:
        raise UserError("--flush-every and --idle-after must be positive")
    stop = parse_duration_seconds(args.stop_when_idle) if args.stop_when_idle else None
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UserError(f"--metrics-port {args.metrics_port} is not a port (1-65535)")
    check_writable(args.out)
    run = "s" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")  # later runs sort later
    read = KafkaReadConfig(
        args.kafka,
        args.topic,
        args.group,
        watermark_delay_us=seconds["watermark_delay"] * 1_000_000,
        idle_after_s=seconds["idle_after"],
        stop_when_idle_s=stop,
        run_id=run,
    )
    targets = OutputTargets(args.out.rstrip("/") or "/", run, sinks, flush_every_s=seconds["flush_every"])
    status_read = None
    if args.status_topic:
        if spec.consolidation is None:
            raise UserError(
                "--status-topic tells consolidated bars which venues are disconnected: add --bars consolidated:1m"
            )
        if args.status_topic == args.topic:
            raise UserError("--status-topic must not be the trades' --topic")
        status_read = replace(
            read,
            topic=args.status_topic,
            run_id=f"{run}-feed-status",
            counted_as=FEED_STATUS_COUNTERS,
            idle_follows_clock=True,
        )
    transfers_read, reads_trades = None, True
    if args.transfers_topic:
        if spec.chain is None:
            raise UserError("--transfers-topic feeds the on-chain tables: add --bars chain:INTERVAL")
        if args.transfers_topic == args.topic:
            raise UserError("--transfers-topic must not be the trades' --topic")
        transfers = replace(
            read, topic=args.transfers_topic, run_id=f"{run}-transfers", counted_as=TOKEN_TRANSFER_COUNTERS
        )
        if any(table.record_type == "trade" for table in output_tables(spec)):
            transfers_read = transfers
        else:  # on-chain tables only: the transfers are the stream's one topic
            read, reads_trades = transfers, False
    elif spec.chain is not None:
        raise UserError("--bars chain:INTERVAL is built from ERC-20 transfers: add --transfers-topic")
    return StreamConfig(
        read,
        spec,
        targets,
        commit_every_s=seconds["commit_every"],
        instruments=instruments_from_args(args),
        status_read=status_read,
        transfers_read=transfers_read,
        reads_trades=reads_trades,
    )


def run_stream(args, console: Console) -> int:
    config = stream_config(args)
    tables = tuple(table.name for table in output_tables(config.spec))  # the first is the accounting's
    profile = _named_flink_job(runner_profile_from_args(args, streaming=True), args)
    lock_output(config.targets.out)
    # Workers in this process (LOOPBACK) see a drain request; elsewhere use the runner's own drain.
    drains_here = profile.name != "dataflow" and profile.option_values(True).get("environment_type") == "LOOPBACK"
    try:
        starts = partition_starts(config.read)
    except Exception as error:  # confluent_kafka raises KafkaException for an unreachable broker or a missing topic
        if profile.name in ("prism", "portable", "flink") or drains_here:
            raise UserError(
                f"cannot read {config.read.topic!r} from Kafka at {args.kafka}: {_first_line(error)}"
            ) from None
        starts = []  # a remote runner's workers may reach a broker this machine cannot: they find the partitions
        console.print(f"[yellow]Kafka at {args.kafka} is not reachable from here; the workers will look it up[/yellow]")
    for other in (config.status_read, config.transfers_read):
        if other is not None and starts:
            try:
                partition_starts(other)
            except Exception as error:
                raise UserError(
                    f"cannot read {other.topic!r} from Kafka at {args.kafka}: {_first_line(error)}"
                ) from None
    resumed = [s for s in starts if s.resume_us]
    how_to_stop = (
        "Ctrl-C drains" if drains_here else "Ctrl-C cancels (drain with the runner, e.g. gcloud dataflow jobs drain)"
    )
    console.print(
        f"streaming {config.read.topic} ({len(starts) or '?'} partitions"
        f"{', resuming from committed offsets' if resumed else ''}) → {config.targets.out}; "
        f"{how_to_stop}"
    )

    reset_drain()
    options = profile.options(_FLINK_STREAM_FLAGS if profile.name == "flink" else [], streaming=True)
    pipeline = beam.Pipeline(runner=profile.runner(), options=_without_job_deadline(profile, options))
    build_stream(pipeline, config)
    started = time.monotonic()
    interrupts = {"n": 0}
    # Everything built so far lives as long as the stream: keep it out of the cyclic collector,
    # whose full passes over it would pause the in-process workers again and again, and run the
    # collector rarely (runners.gc_tuning).
    collect_rarely(collect_first=True)
    pipeline_log = PipelineLog.install()
    _cancel_previous_flink_job(profile, console)
    metrics = _metrics_endpoint(args.metrics_port)
    try:
        result = pipeline.run()
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise
    if metrics is not None:
        metrics.watch(result, config.read)

    def on_interrupt(_signum, _frame):
        interrupts["n"] += 1
        if interrupts["n"] == 1 and drains_here:
            print("cryptobeam: draining: finishing open windows (Ctrl-C again to cancel)", flush=True)
            request_drain()
        else:
            interrupts["n"] = max(interrupts["n"], 2)
            result.cancel()

    previous = {s: signal.signal(s, on_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_progress = threading.Event()
    if not args.no_progress:
        threading.Thread(
            target=_print_progress, args=(config.targets.out, tables, started, stop_progress), daemon=True
        ).start()
    try:
        result.wait_until_finish()
    except Exception as error:
        if interrupts["n"] > 1:  # the runner reports a cancelled job as a failure
            console.print(
                "[yellow]cancelled: open windows were not finalized; the committed offsets resume them[/yellow]"
            )
            return 130
        where = write_error_log(config.targets.out, pipeline_log)
        raise PipelineFailed(f"the stream failed: {type(error).__name__}: {_first_line(error)} ({where})") from None
    finally:
        stop_progress.set()
        if metrics is not None:
            metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - started
    if interrupts["n"] > 1:
        console.print("[yellow]cancelled: open windows were not finalized; the committed offsets resume them[/yellow]")
        return 130
    counters = counters_of(result)  # one metrics query: a remote runner answers it over the network
    on_disk = {} if is_remote(config.targets.out) else written_by_run(config.targets.out, config.targets.run, tables)
    accounting = Accounting.from_counters({**counters, **on_disk})
    problems = accounting.problems()
    summary = {
        "command": "stream",
        "run": config.targets.run,
        "topic": args.topic,
        "group": args.group,
        "interval": config.spec.interval.text,
        "tables": list(tables),
        "elapsed_seconds": round(elapsed, 3),
        "reconciled": not problems,
        "problems": problems,
        "kafka_offset_commits": counters.get("kafka_offset_commits", 0),
        "kafka_broker_outages": counters.get("kafka_broker_outages", 0),
        "kafka_broker_retries": counters.get("kafka_broker_retries", 0),
        **accounting.as_dict(),
    }
    # Files minus counters, where they differ: how often, and by how much, the runner miscounts.
    missed = {name: value - counters.get(name, 0) for name, value in on_disk.items() if value != counters.get(name, 0)}
    if missed:
        summary["runner_counters_differ_from_files"] = missed
    write_json_atomically(summary, os.path.join(config.targets.out, "_SUMMARY.json"))
    console.print(summary_table(accounting, elapsed, config.targets.out, command="stream"))
    if summary["kafka_broker_outages"]:
        console.print(
            f"[yellow]the Kafka broker was unavailable {summary['kafka_broker_outages']} time(s); "
            f"the stream waited ({summary['kafka_broker_retries']} retries) and went on[/yellow]"
        )
    for problem in problems:
        console.print(f"[red]accounting does not reconcile: {problem}[/red]")
    return EXIT_UNRECONCILED if problems else 0


def _metrics_endpoint(port: int | None):
    """The Prometheus endpoint (``--metrics-port``), serving before the job starts; None without one."""
    if port is None:
        return None
    try:
        return StreamMetricsEndpoint(port)
    except MetricsPortInUse as error:
        raise UserError(str(error)) from None


_FLINK_STREAM_FLAGS = ["--number_of_execution_retries=0"]
"""Flink never restarts a stream's failed job: a restart would read again from the committed
offsets inside the same run, whose files and counters already hold part of those trades, and a
job whose LOOPBACK launcher died would restart forever, holding the slots the next run needs
(Flink's default restart strategy once checkpoints are on). The stream fails instead; its next
run resumes from the committed offsets."""


def _named_flink_job(profile, args):
    """On Flink, the stream's job is named after its topic and consumer group (unless ``--job-name``
    names it), so that a later run of the same stream finds it (``_cancel_previous_flink_job``)."""
    if profile.name != "flink" or profile.job_name:
        return profile
    return replace(profile, job_name=f"cryptobeam-stream {args.topic} {args.group}")


def _cancel_previous_flink_job(profile, console) -> None:
    """Cancel a previous run's job of this stream still live on the Flink cluster, and wait until
    it is over, before submitting. A launcher that was killed cannot cancel its job: with LOOPBACK
    workers the job fails with them, but with EXTERNAL or PROCESS workers it reads on and commits
    offsets beside this run, and either way it may still hold the slots this run needs."""
    if profile.name != "flink":
        return
    try:
        cancelled = cancel_jobs_named(profile.flink_master, profile.job_name)
    except (OSError, ValueError, KeyError, FlinkError) as error:
        raise UserError(
            f"cannot check the Flink cluster at {profile.flink_master} for a previous run of this "
            f"stream: {_first_line(error)}"
        ) from None
    if cancelled:
        console.print(
            f"[yellow]cancelled the previous run's Flink job {', '.join(cancelled)} "
            f"({profile.job_name!r}) before starting this one[/yellow]"
        )


def _without_job_deadline(profile, options):
    """Beam's portable runner follows a job's state over a gRPC stream whose deadline is
    ``--job_server_timeout`` (300 s by default): a stream running longer fails with
    DEADLINE_EXCEEDED. Prism's job server is started here by the runner, so nothing is gained
    by a deadline on it."""
    if profile.name == "prism":
        options.view_as(PortableOptions).job_server_timeout = None
    return options


def written_by_run(out: str, run: str, tables: tuple[str, ...] = ("bars",)) -> dict[str, int]:
    """What the run's files hold, as the accounting's written figures. Prism can report a drained
    stream finished before its counters include the last file write (on a loaded machine), so the
    report reads the files the run wrote rather than trust the counters.

    ``tables`` are the run's tables of bars in its order: as the counters do (``beam_pipelines.outputs``),
    the bar figures are the first table's, and the files and rows are counted for every table."""
    files = {table: _files_of_run(os.path.join(out, table), run) for table in tables}
    counted = counted_table(tables)
    written = written_in_files(files.get(counted, []), _files_of_run(os.path.join(out, "dead_letter"), run))
    for table, paths in files.items():  # each table's files read once: the counted one's figures are above
        if table_named(table).record_type != "trade":  # on-chain tables count transfers, not trades
            written[f"table_rows.{table}"] = rows_in_files(paths)
            if table == TOKEN_ACTIVITY.name:
                in_aggregates, retracted = token_activity_on_disk(paths)
                written[f"{TOKEN_TRANSFER_COUNTERS}in_aggregates"] = in_aggregates
                written[f"{TOKEN_TRANSFER_COUNTERS}retracted"] = retracted
            continue
        held = written if table == counted else written_in_files(paths, [])
        written[f"table_rows.{table}"] = held["bar_rows_written"]
        written[f"table_trades.{table}"] = held["trades_in_final_bars"]
    written["bar_files_written"] = sum(len(paths) for paths in files.values())
    return written


def _files_of_run(directory: str, run: str) -> list[str]:
    """The Parquet files under ``directory`` that the stream run ``run`` wrote."""

    try:
        files = ds.dataset(directory, format="parquet").files
    except FileNotFoundError:
        return []
    return [path for path in files if run_of(os.path.basename(path)) == run]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _print_progress(
    out: str, tables: tuple[str, ...], started: float, stop: threading.Event, every_s: float = 10.0
) -> None:
    """A line every so often: how long, how many bar files (of every table) are on disk."""
    while not stop.wait(every_s):
        files = sum(len(names) for table in tables for _root, _dirs, names in os.walk(os.path.join(out, table)))
        print(json.dumps({"elapsed_s": round(time.monotonic() - started), "bar_files": files}), flush=True)
