"""The ``cryptobeam`` command line.

User errors print one line and exit 2; a run whose records do not reconcile exits 1; a
pipeline that fails while running prints one line, keeps its traceback in ``_ERROR.log`` and exits 3.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
from datetime import date
from typing import TYPE_CHECKING

from beam_pipelines.chain_command import add_chain_parser
from beam_pipelines.cli_common import (
    ERROR_LOG,
    EXIT_PIPELINE_FAILED,
    EXIT_UNRECONCILED,
    EXIT_USER_ERROR,
    CommandParser,
    PipelineFailed,
    PipelineLog,
    UserError,
    add_bar_options,
    add_instruments_option,
    add_runner_options,
    add_sink_options,
    bar_spec_from_args,
    check_name_option,
    check_writable,
    instruments_from_args,
    lock_output,
    parse_duration_seconds,
    progress_bar,
    runner_profile_from_args,
    sink_targets_from_args,
    summary_table,
    write_error_log,
)
from beam_pipelines.collect_command import add_collect_parser
from beam_pipelines.iceberg_command import add_iceberg_parser, run_iceberg
from beam_pipelines.report_command import add_report_parser, run_report
from beam_pipelines.seams import SEAM_FILES
from beam_pipelines.stream_command import add_stream_options
from io_connectors.paths import is_remote

if TYPE_CHECKING:
    from rich.console import Console

# Trades per chunk on the in-process runner: it holds a chunk's window chunks in memory, so this
# bounds a worker's memory, and the fewer chunks, the less each run's fixed cost (pipeline set-up,
# a bundle of timers, a file per date) repeats. It is large enough that a month of one symbol is
# two pieces, one per worker on two cores; a smaller budget cuts it into more pieces, each paying
# the fixed cost, for little less memory (docs/benchmarks.md#figures-behind-design-choices).
DEFAULT_CHUNK_ROWS = 8_000_000


def add_input_options(command: argparse.ArgumentParser) -> None:
    """The options every command that reads trade files shares."""
    command.add_argument("--source", help="input format of each --input that names none; see 'cryptobeam sources'")
    command.add_argument(
        "--input",
        required=True,
        action="append",
        metavar="[SOURCE:]GLOB",
        help="file path or glob (quote it), read as --source or as the SOURCE it starts with; "
        "repeat for more, of one source or several (e.g. binance-aggtrades:'dumps/*.zip')",
    )
    command.add_argument("--symbol", help="symbol to use when the records and file names do not say")
    command.add_argument("--exchange", help="exchange id to record (default: the source's exchange)")
    add_instruments_option(command)


def input_files_and_source(args):
    """The matched input files, each naming the source it is read as, and the ``--source`` format
    (None without one), or a UserError saying what is wrong.

    An ``--input`` starting with a source's name and a colon is read as that source; any other is
    a path or glob read as ``--source``."""
    from io_connectors.source_formats import SOURCES, split_source_prefix

    if args.source is not None and args.source not in SOURCES:
        raise UserError(f"unknown source {args.source!r}; choose one of: {', '.join(SOURCES)}")
    check_name_option("--symbol", args.symbol)
    check_name_option("--exchange", args.exchange)
    files: dict[str, object] = {}
    for text in args.input:
        name, pattern = split_source_prefix(text)
        if (name or args.source) is None:
            raise UserError(
                f"--input {text!r} names no source{_unknown_source_hint(text)}: write SOURCE:GLOB "
                "or pass --source (see 'cryptobeam sources')"
            )
        for input_file in _matched(pattern, name or args.source, may_name_a_source=name is None):
            other = files.setdefault(input_file.path, input_file)
            if other.source != input_file.source:
                raise UserError(f"{input_file.path!r} is given both as {other.source} and as {input_file.source}")
    if args.exchange and len({f.source for f in files.values()}) > 1:
        raise UserError(
            "--exchange names the exchange of every record, so it needs a single source; "
            "each of several sources records its own"
        )
    return sorted(files.values(), key=lambda f: f.path), SOURCES.get(args.source)


def _matched(pattern: str, source: str, may_name_a_source: bool):
    """The files a pattern matches, to be read as ``source``; matching nothing is a UserError, which
    says so when the text starts like a source that does not exist (``nosuch:...``)."""
    from io_connectors.files import InputError, match_inputs

    try:
        return match_inputs([pattern], source)
    except InputError as error:
        raise UserError(f"{error}{_unknown_source_hint(pattern) if may_name_a_source else ''}") from None


def _unknown_source_hint(text: str) -> str:
    """Said of an --input like ``nosuch:x``: a word before a colon that may be a mistyped source.
    One letter is a Windows drive, and ``scheme://`` a remote path."""
    prefix, colon, _ = text.partition(":")
    if colon and len(prefix) > 1 and not is_remote(text) and "/" not in prefix and "\\" not in prefix:
        return f" (no source is named {prefix!r})"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="cryptobeam", description="Event-time OHLCV/VWAP bars from crypto trades, on Apache Beam."
    )
    commands = parser.add_subparsers(dest="command", parser_class=CommandParser, required=True)
    add_backfill_options(commands.add_parser("backfill", help="build bars from historical exchange files"))
    commands.add_parser("sources", help="list the input formats")
    commands.add_parser("sinks", help="list the outputs (--sink)")
    add_stream_options(commands.add_parser("stream", help="build bars live from a Kafka topic of trades (unbounded)"))
    add_collect_parser(commands)
    replay = commands.add_parser("replay", help="publish historical trade files to Kafka in event-time order")
    add_input_options(replay)
    replay.add_argument("--kafka", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    replay.add_argument("--topic", default="trades", help="topic (default: trades)")
    replay.add_argument("--speed", default="max", help="multiple of real time, e.g. 60, or max (default)")
    replay.add_argument("--disorder", default="0", help="shuffle trades within this bound, e.g. 2s")
    replay.add_argument("--late-fraction", type=float, default=0.0, help="fraction of trades to delay, e.g. 0.01")
    replay.add_argument("--late-by", default="0", help="how long late trades are delayed, e.g. 5m")
    replay.add_argument("--seed", type=int, default=0, help="random seed for disorder and lateness")
    replay.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    kafka = commands.add_parser("kafka", help="run a local single-node Kafka broker (KRaft) for demos and tests")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument("--dir", default=".tools/kafka-run", help="work directory (config, data, logs, pid)")
    kafka.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    flink = commands.add_parser("flink", help="run a local Flink session cluster (JobManager + TaskManager)")
    flink.add_argument("action", choices=["up", "down", "status"])
    flink.add_argument("--dir", default=".tools/flink-run", help="work directory (config, logs, pids)")
    flink.add_argument("--slots", type=int, default=2, help="task slots of the TaskManager (default 2)")
    check = commands.add_parser("validate", help="re-check an output directory: checksums, accounting, bars, gaps")
    check.add_argument("out", help="output directory of a backfill or a stream")
    add_report_parser(commands)
    add_iceberg_parser(commands)
    add_chain_parser(commands)
    dataflow = commands.add_parser("dataflow", help="Google Cloud Dataflow: plan a job offline")
    plan = dataflow.add_subparsers(dest="dataflow_command", parser_class=CommandParser, required=True).add_parser(
        "plan", help="build the Dataflow job with Beam's dry run (no network) and write its graph for review"
    )
    jobs = plan.add_subparsers(dest="job", parser_class=CommandParser, required=True)
    for name, add_options in (("backfill", add_backfill_options), ("stream", add_stream_options)):
        job = jobs.add_parser(name, help=f"plan a {name}")
        add_options(job)
        job.add_argument("--plan-out", required=True, help="directory for pipeline.pb, job.json and plan.txt")
        job.set_defaults(runner="dataflow")
    return parser


def add_backfill_options(backfill: argparse.ArgumentParser) -> None:
    add_input_options(backfill)
    backfill.add_argument("--out", required=True, help="output directory")
    add_bar_options(backfill)
    add_runner_options(backfill, "direct")
    backfill.add_argument("--batch-rows", type=int, default=250_000, help="records per raw batch")
    backfill.add_argument(
        "--max-line-bytes",
        type=int,
        default=None,
        help="a longer text line is one malformed dead letter (default 1 MiB)",
    )
    backfill.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    backfill.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out that used other settings"
    )
    backfill.add_argument("--from", dest="date_from", help="first date to backfill (YYYY-MM-DD, from file names)")
    backfill.add_argument("--to", dest="date_to", help="last date to backfill (YYYY-MM-DD, inclusive)")
    backfill.add_argument("--chunk", help="split the work into chunks of N days (e.g. 1d) that resume independently")
    backfill.add_argument("--workers", type=int, default=None, help="chunks run in parallel (default: up to 2)")
    backfill.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="cut chunks larger than this many trades (Parquet by event time at window "
        "boundaries, dated text files by file) so memory stays flat; 0 never cuts "
        f"(default: {DEFAULT_CHUNK_ROWS:,} on the direct runner, 0 on clusters)",
    )
    add_sink_options(backfill, streaming=False)


RUN_FILES = ("_SUMMARY.json", ERROR_LOG, SEAM_FILES, "report.html")  # report.html: of the previous run's output
"""What a backfill writes in ``--out`` besides its chunks' files (which its manifests record)."""


def _check_inputs_outside(files, out: str) -> None:
    """An input inside the output directory would be read as input and could be replaced as output."""
    if is_remote(out):
        return
    root = os.path.realpath(out)
    for input_file in files:
        if not is_remote(input_file.path) and os.path.commonpath([root, os.path.realpath(input_file.path)]) == root:
            raise UserError(
                f"input {input_file.path!r} is inside the output directory {out!r}; "
                "choose an --out that holds no inputs"
            )


def _date_option(text: str | None, flag: str):
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UserError(f"bad {flag} {text!r}: use YYYY-MM-DD") from None


def _backfill_config(args):
    from beam_pipelines.backfill_config import BackfillConfig
    from io_connectors.source_formats import SOURCES

    files, source = input_files_and_source(args)
    if args.chunk and any(SOURCES[f.source].record_type == "block" for f in files):
        raise UserError(
            "--chunk cuts a run by date, and block files are named by block range: the transfers need "
            "the run's blocks in one chunk, so leave out --chunk"
        )
    sinks = sink_targets_from_args(args, streaming=False)
    if args.batch_rows <= 0:
        raise UserError("--batch-rows must be positive")
    from io_connectors.files import DEFAULT_LINE_LIMIT

    line_limit = DEFAULT_LINE_LIMIT if args.max_line_bytes is None else args.max_line_bytes
    if line_limit <= 0:
        raise UserError("--max-line-bytes must be positive")
    spec = bar_spec_from_args(args)
    if spec.early_firing_seconds is not None:
        raise UserError(
            "--early needs a streaming run (cryptobeam stream); a backfill's input is complete, so "
            "each bar gets its final pane at once"
        )
    check_writable(args.out)
    _check_inputs_outside(files, args.out)
    runner = runner_profile_from_args(args, streaming=False, dry_run=_planning(args))
    chunk_rows = getattr(args, "chunk_rows", None)
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS if runner.name == "direct" else 0
    if chunk_rows < 0:
        raise UserError("--chunk-rows must be 0 (never cut) or positive")
    return BackfillConfig(
        source=source,
        files=files,
        spec=spec,
        out=args.out.rstrip("/") or "/",
        exchange=args.exchange,
        symbol=args.symbol,
        batch_rows=args.batch_rows,
        runner=runner,
        sinks=sinks,
        chunk_rows=chunk_rows,
        line_limit=line_limit,
        instruments=instruments_from_args(args),
    )


def _planning(args) -> bool:
    return getattr(args, "plan_out", None) is not None


def run_plan(args, console: Console) -> int:
    import apache_beam as beam

    from beam_pipelines.dataflow_plan import write_plan

    streaming = args.job == "stream"
    if streaming:
        from beam_pipelines.stream import build_stream
        from beam_pipelines.stream_run import stream_config

        config = stream_config(args)
        profile = runner_profile_from_args(args, streaming=True, dry_run=True)
        build = build_stream
    else:
        from beam_pipelines.backfill import build_backfill

        config = _backfill_config(args)
        profile, build = config.runner, build_backfill
    pipeline = beam.Pipeline(runner=profile.runner(), options=profile.options(streaming=streaming))
    build(pipeline, config)
    written = write_plan(pipeline.run(), args.plan_out)
    console.print(
        f"Dataflow {args.job} job planned offline (dry run, nothing submitted): {', '.join(str(p) for p in written)}"
    )
    return 0


def _start_workers_early(args) -> None:
    """A large local backfill will run chunks in workers: start the server they fork from now."""
    from beam_pipelines.worker_server import EARLY_START_BYTES, local_input_bytes, start_early

    if args.runner != "direct" or args.workers == 1 or _planning(args):
        return
    # The registry of sources costs more to import than this guess may take: any word before a
    # colon counts as a source's name here (a local path rarely has one; a wrong guess only costs time).
    patterns = [re.sub(r"^[\w-]{2,}:(?!//)", "", text) for text in args.input]
    if args.chunk or (args.chunk_rows != 0 and local_input_bytes(patterns) >= EARLY_START_BYTES):
        start_early()


def run_backfill(args, console: Console) -> int:
    from beam_pipelines.accounting import Accounting
    from beam_pipelines.chunk_planning import (
        ChunkError,
        joined_where_dates_overlap,
        parse_chunk_days,
        plan_chunks,
        split_large_chunks,
    )
    from beam_pipelines.chunked_backfill import chunks_to_run, conflicting_settings, default_workers, run_chunks
    from beam_pipelines.manifest import ChunkManifest, remove_previous_run
    from io_connectors.atomic_files import write_json_atomically
    from io_connectors.progress import set_progress_listener

    config = _backfill_config(args)
    workers = _workers(args.workers, default_workers(), console)
    lock_output(config.out)
    try:
        chunks = plan_chunks(
            config.files,
            parse_chunk_days(args.chunk) if args.chunk else None,
            _date_option(args.date_from, "--from"),
            _date_option(args.date_to, "--to"),
        )
    except ChunkError as error:
        raise UserError(str(error)) from None
    if config.spec.consolidation is not None:  # every venue's trades of a day in one chunk
        chunks = joined_where_dates_overlap(chunks)
    # Information bars count from each UTC day's start, and consolidated bars judge venues day by
    # day, so their chunks hold whole days.
    chunks = split_large_chunks(
        chunks,
        config.source.layout if config.source else None,
        config.spec.interval,
        config.chunk_rows,
        whole_days=config.spec.day_by_day,
    )
    conflicts = conflicting_settings(config, chunks)
    if conflicts and not args.overwrite:
        raise UserError(
            f"{config.out!r} holds chunks built with other settings or cut differently ({conflicts[0]} ...); "
            "pass --overwrite to replace that run"
        )
    if args.overwrite:
        remove_previous_run(config.out, RUN_FILES)
    todo, done = chunks_to_run(config, chunks)
    started = time.monotonic()
    by_chunk = {c.chunk_id: c for c in chunks}
    progress = progress_bar(args.no_progress)
    with progress:
        if len(chunks) == 1:
            files = chunks[0].files
            task = progress.add_task("reading", total=sum(f.size for f in files), detail=f"0/{len(files)} files")
            seen = {"files": 0}

            def on_file(files=0, bytes=0):
                seen["files"] += files
                progress.update(
                    task,
                    advance=bytes,
                    detail=f"{seen['files']}/{len(files_)} files",
                    description="reading" if seen["files"] < len(files_) else "building bars",
                )

            files_ = files
            set_progress_listener(on_file)
        else:
            task = progress.add_task(
                "chunks",
                total=len(chunks),
                completed=len(done),
                detail=f"{len(done)} already complete, {len(todo)} to run",
            )
        records_done = {"n": 0}

        def on_chunk(manifest):
            records_done["n"] += Accounting.from_counters(manifest.counts).all_records_in
            rate = records_done["n"] / max(time.monotonic() - started, 1e-9)
            progress.update(
                task,
                advance=1 if len(chunks) > 1 else 0,
                detail=f"last {manifest.chunk_id}, {records_done['n']:,} records, {rate:,.0f} records/s",
            )

        pipeline_log = PipelineLog.install()
        try:
            run_chunks(config, todo, workers, on_chunk)
        except Exception as error:  # a pipeline failure: one line here, the whole story in a log
            where = write_error_log(config.out, pipeline_log)
            message = str(error).splitlines()[0] if str(error) else ""
            raise PipelineFailed(f"the pipeline failed: {type(error).__name__}: {message} ({where})") from None
        finally:
            set_progress_listener(None)
    seams = _fill_seams(config, pipeline_log) if config.spec.fill_gaps and len(chunks) > 1 else Accounting()
    elapsed = time.monotonic() - started
    stale_error_log = os.path.join(config.out, ERROR_LOG)
    if os.path.exists(stale_error_log):  # an earlier attempt's failure, which this run has resumed past
        os.remove(stale_error_log)
    manifests = [m for m in ChunkManifest.all_in(config.out) if m.chunk_id in by_chunk]
    accounting = Accounting.total([Accounting.from_counters(m.counts) for m in manifests] + [seams])
    problems = [p for m in manifests for p in m.problems(config.out, check_inputs=False)]
    problems += [f"chunk {m.chunk_id}: {p}" for m in manifests for p in Accounting.from_counters(m.counts).problems()]
    problems += accounting.problems()
    summary = {
        "command": "backfill",
        "source": config.source_setting(),
        "interval": config.spec.interval.text,
        "chunks": len(chunks),
        "chunks_run": len(todo),
        "chunks_skipped": len(done),
        "elapsed_seconds": round(elapsed, 3),
        "reconciled": not problems,
        "problems": problems,
        **accounting.as_dict(),
    }
    write_json_atomically(summary, f"{config.out}/_SUMMARY.json")
    console.print(summary_table(accounting, elapsed, config.out, len(chunks), len(todo), len(done)))
    for problem in problems:
        console.print(f"[red]accounting does not reconcile: {problem}[/red]")
    return EXIT_UNRECONCILED if problems else 0


def _fill_seams(config, pipeline_log: PipelineLog):
    """The filled bars between chunks, to every sink (``beam_pipelines.seams``); what they add to the accounting."""
    from beam_pipelines.seam_fill import fill_seams

    try:
        return fill_seams(config.out, config.spec, config.sinks)
    except Exception as error:  # a sink failing, as in a chunk: one line here, the whole story in a log
        where = write_error_log(config.out, pipeline_log)
        message = str(error).splitlines()[0] if str(error) else ""
        raise PipelineFailed(f"the seam fill failed: {type(error).__name__}: {message} ({where})") from None


def _workers(requested: int | None, default: int, console: Console) -> int:
    """``--workers``: at least 1; more than the cores would only share them, so it is capped."""
    if requested is None:
        return default
    if requested < 1:
        raise UserError("--workers must be at least 1")
    cores = os.cpu_count() or 1
    if requested > cores:
        console.print(f"note: --workers {requested} is more than the {cores} cores; running {cores}")
        return cores
    return requested


def run_validate(out: str, console: Console) -> int:
    from beam_pipelines.validate_output import validate

    if not os.path.isdir(out):
        raise UserError(f"{out!r} is not a directory")
    report = validate(out)
    from rich.table import Table

    table = Table(title=f"cryptobeam validate {out}")
    table.add_column("checked")
    table.add_column("count", justify="right")
    for name, value in report.checked.items():
        table.add_row(name, f"{value:,}")
    table.add_row("violations", f"[{'red' if report.violations else 'green'}]{len(report.violations):,}[/]")
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    for violation in report.violations[:50]:
        console.print(f"[red]violation:[/red] {violation}")
    if len(report.violations) > 50:
        console.print(f"... and {len(report.violations) - 50} more")
    return 1 if report.violations else 0


def run_replay(args, console: Console) -> int:
    from io_connectors.replay import ReplayPlan, load_trades_of_sources, replay
    from io_connectors.source_formats import SOURCES, parser_for

    files, _ = input_files_and_source(args)
    not_trades = sorted({f.source for f in files if SOURCES[f.source].record_type != "trade"})
    if not_trades:
        raise UserError(
            f"replay publishes trades; {', '.join(not_trades)} holds {SOURCES[not_trades[0]].record_type} records "
            "(collect --chain publishes a chain's records)"
        )
    speed = None
    if args.speed != "max":
        try:
            speed = float(args.speed)
        except ValueError:
            speed = -1.0
        if not speed > 0:
            raise UserError(f"bad --speed {args.speed!r}: a positive multiple of real time, or max")
    if not 0 <= args.late_fraction <= 1:
        raise UserError("--late-fraction must be between 0 and 1")
    plan = ReplayPlan(
        speed=speed,
        disorder_us=parse_duration_seconds(args.disorder) * 1_000_000,
        late_fraction=args.late_fraction,
        late_by_us=parse_duration_seconds(args.late_by) * 1_000_000,
        seed=args.seed,
    )
    instruments = instruments_from_args(args)
    paths_by_source: dict[str, list[str]] = {}
    for input_file in files:
        paths_by_source.setdefault(input_file.source, []).append(input_file.path)
    trades, read, rejected = load_trades_of_sources(
        [
            (SOURCES[name], parser_for(SOURCES[name], args.exchange, args.symbol, instruments), paths)
            for name, paths in paths_by_source.items()
        ]
    )
    with progress_bar(args.no_progress) as progress:
        task = progress.add_task("publishing", total=trades.num_rows, detail=f"to {args.topic}")
        try:
            report = replay(
                trades, args.kafka, args.topic, plan, on_progress=lambda n: progress.update(task, completed=n)
            )
        except RuntimeError as error:
            raise PipelineFailed(str(error)) from None
        progress.update(task, completed=trades.num_rows)
    from rich.table import Table

    table = Table(title=f"cryptobeam replay → {args.kafka}/{args.topic}")
    table.add_column("records")
    table.add_column("count", justify="right")
    for name, value in [
        ("read", read),
        ("rejected by the parser (not published)", rejected),
        ("published", report.published),
        ("  of which held back as late", report.late),
    ]:
        table.add_row(name, f"{value:,}")
    table.add_row("elapsed", f"{report.seconds:,.1f} s ({report.published / max(report.seconds, 1e-9):,.0f} trades/s)")
    console.print(table)
    return 0


def run_kafka(args, console: Console) -> int:
    from runners.local_kafka import KafkaError, LocalKafka

    try:
        if args.action == "up":
            broker = LocalKafka.start(args.dir, port=args.port)
            console.print(f"Kafka is up: bootstrap {broker.bootstrap} (work dir {broker.work})")
        elif args.action == "down":
            LocalKafka.attach(args.dir).stop()
            console.print("Kafka is down")
        else:
            try:
                broker = LocalKafka.attach(args.dir)
            except KafkaError:
                console.print(f"Kafka is not running (no broker started in {args.dir})")
                return 1
            alive = os.path.exists(f"/proc/{broker.pid}")
            console.print(f"Kafka {'is running' if alive else 'is not running'}: bootstrap {broker.bootstrap}")
            return 0 if alive else 1
    except KafkaError as error:
        raise UserError(str(error)) from None
    return 0


def run_flink(args, console: Console) -> int:
    from runners.local_flink import FLINK_VERSION, FlinkError, LocalFlink

    try:
        if args.action == "up":
            cluster = LocalFlink.start(args.dir, slots=args.slots)
            console.print(
                f"Flink {FLINK_VERSION} is up: --runner flink --flink-master {cluster.flink_master} "
                f"(web UI {cluster.rest_url}, work dir {cluster.work})"
            )
        elif args.action == "down":
            LocalFlink.attach(args.dir).stop()
            console.print("Flink is down")
        else:
            try:
                overview = LocalFlink.attach(args.dir).status()
            except FlinkError:
                overview = None
            if overview is None:
                console.print(f"Flink is not running (no cluster answers for {args.dir})")
                return 1
            console.print(
                f"Flink {overview['flink-version']} is running: {overview['taskmanagers']} TaskManager(s), "
                f"{overview['slots-available']}/{overview['slots-total']} slots free, "
                f"{overview['jobs-running']} job(s) running"
            )
    except FlinkError as error:
        raise UserError(str(error)) from None
    return 0


def list_sources(console: Console) -> int:
    from rich.table import Table

    from io_connectors.source_formats import SOURCES

    table = Table(title="input formats (--source)")
    table.add_column("name")
    table.add_column("what")
    for source in SOURCES.values():
        table.add_row(source.name, source.description)
    console.print(table)
    return 0


def list_sinks(console: Console) -> int:
    from rich.table import Table

    from io_connectors.sinks import ALWAYS, NOT_OFFERED, SINKS

    shown = {ALWAYS: "always", NOT_OFFERED: "no"}
    table = Table(title="outputs (--sink)")
    for column in ("name", "backfill", "stream", "what"):
        table.add_column(column)
    for sink in SINKS.values():
        table.add_row(
            sink.name, *(shown.get(sink.use(streaming), "--sink") for streaming in (False, True)), sink.description
        )
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "backfill":
            _start_workers_early(args)  # before rich loads: each ms here delays the workers
        from rich.console import Console

        console = Console()
        # A command's run module is imported when it runs: the parser alone stays free of Beam, Arrow
        # and the collectors (tests/test_cli.py).
        if args.command == "backfill":
            return run_backfill(args, console)
        if args.command == "validate":
            return run_validate(args.out, console)
        if args.command == "kafka":
            return run_kafka(args, console)
        if args.command == "flink":
            return run_flink(args, console)
        if args.command == "replay":
            return run_replay(args, console)
        if args.command == "stream":
            from beam_pipelines.stream_run import run_stream

            return run_stream(args, console)
        if args.command == "collect":
            from beam_pipelines.collect_run import run_collect

            return run_collect(args)
        if args.command == "dataflow":
            return run_plan(args, console)
        if args.command == "report":
            return run_report(args, console)
        if args.command == "iceberg":
            return run_iceberg(args, console)
        if args.command == "chain":
            from beam_pipelines.chain_run import run_chain

            return run_chain(args, console)
        if args.command == "sinks":
            return list_sinks(console)
        return list_sources(console)
    except UserError as error:
        print(f"cryptobeam: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except PipelineFailed as error:
        print(f"cryptobeam: error: {error}", file=sys.stderr)
        return EXIT_PIPELINE_FAILED
    except KeyboardInterrupt:
        print("cryptobeam: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # the disk filled up, a directory vanished: outside the pipeline's steps
        where = f": {error.filename}" if error.filename else ""
        print(f"cryptobeam: error: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_PIPELINE_FAILED


def entry_point() -> None:
    code = main()
    # A normal exit (exit handlers, flushes, non-daemon threads joined), minus the part that costs:
    # frozen objects are left out of the interpreter's final collection of the Beam, Arrow and
    # polars modules, which would otherwise make every command wait for it.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry_point()
