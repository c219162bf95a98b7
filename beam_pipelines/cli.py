"""The ``cryptobeam`` command line.

User errors print one line and exit 2; a run whose records do not reconcile exits 1; a
pipeline that fails while running prints one line, keeps its traceback in ``_ERROR.log`` and exits 3.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
import uuid

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

EXIT_USER_ERROR = 2
EXIT_UNRECONCILED = 1
EXIT_PIPELINE_FAILED = 3


class UserError(Exception):
    """A problem with what the user asked for; shown as one line, never a traceback."""


class PipelineFailed(Exception):
    """The pipeline itself failed while running; shown as one line, with the traceback in a log file."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see: {self.prog} --help)")


def parse_duration_seconds(text: str) -> int:
    """'0', '30s', '10m', '2h' -> seconds."""
    from transforms.interval import IntervalError, parse_interval
    if text.strip() in ("0", "0s"):
        return 0
    try:
        return parse_interval(text).seconds
    except IntervalError:
        raise UserError(f"bad duration {text!r}: use e.g. 0, 30s, 10m, 2h") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cryptobeam", description="Event-time OHLCV/VWAP bars from crypto trades, on Apache Beam.")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)
    backfill = commands.add_parser("backfill", help="build bars from historical exchange files")
    backfill.add_argument("--source", required=True, help="input format; see 'cryptobeam sources'")
    backfill.add_argument("--input", required=True, action="append",
                          help="file path or glob (quote it); repeat for more")
    backfill.add_argument("--out", required=True, help="output directory")
    backfill.add_argument("--interval", default="1m", help="bar interval: 1s, 1m, 15m, 1h, 4h, 1d, 1w ... (default 1m)")
    backfill.add_argument("--fill-gaps", action="store_true",
                          help="emit a bar for each empty interval (O=H=L=C=previous close, volume 0)")
    backfill.add_argument("--symbol", help="symbol to use when the records and file names do not say")
    backfill.add_argument("--exchange", help="exchange id to record (default: the source's exchange)")
    backfill.add_argument("--early", default=None, help="early firing period, e.g. 5s (streaming semantics only)")
    backfill.add_argument("--allowed-lateness", default="0", help="allowed lateness, e.g. 10m (default 0)")
    backfill.add_argument("--accumulation", default="accumulating", help="accumulating or discarding panes")
    backfill.add_argument("--runner", default="direct", help="runner profile (default: direct, in-process)")
    backfill.add_argument("--batch-rows", type=int, default=250_000, help="records per raw batch")
    backfill.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    backfill.add_argument("--overwrite", action="store_true",
                          help="replace the bars, dead letters and summary of an earlier run in --out")
    commands.add_parser("sources", help="list the input formats")
    return parser


RUN_OUTPUTS = ("bars", "dead_letter", "_SUMMARY.json", "_ERROR.log")


def _prepare_output(out: str, overwrite: bool) -> None:
    """An output directory holds one run: refuse to mix runs, or clear the old one on request."""
    if "://" in out:
        return  # remote file systems are checked by the runner when it writes
    existing = [name for name in RUN_OUTPUTS if os.path.exists(os.path.join(out, name))]
    if existing and not overwrite:
        raise UserError(f"output directory {out!r} already holds a run ({', '.join(existing)}); "
                        "pass --overwrite to replace it")
    for name in existing:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _check_writable(out: str) -> None:
    if "://" in out:
        return
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-probe-{uuid.uuid4().hex}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UserError(f"output directory {out!r} is not writable: {error.strerror or error}") from None


def _backfill_config(args):
    from beam_pipelines.backfill import BackfillConfig
    from io_connectors.files import InputError, match_inputs
    from io_connectors.sources import SOURCES
    from transforms import BarSpec
    from transforms.interval import IntervalError

    if args.source not in SOURCES:
        raise UserError(f"unknown source {args.source!r}; choose one of: {', '.join(SOURCES)}")
    if args.batch_rows <= 0:
        raise UserError("--batch-rows must be positive")
    try:
        spec = BarSpec.of(args.interval, fill_gaps=args.fill_gaps,
                          early_firing_seconds=parse_duration_seconds(args.early) if args.early else None,
                          allowed_lateness_seconds=parse_duration_seconds(args.allowed_lateness),
                          accumulation=args.accumulation)
    except (IntervalError, ValueError) as error:
        raise UserError(str(error)) from None
    try:
        files = match_inputs(args.input)
    except InputError as error:
        raise UserError(str(error)) from None
    if spec.early_firing_seconds is not None:
        raise UserError("--early needs a streaming run; a backfill on the 'direct' runner gives exactly one "
                        "final pane per bar")
    _check_writable(args.out)
    _prepare_output(args.out, args.overwrite)
    return BackfillConfig(source=SOURCES[args.source], files=files, spec=spec, out=args.out.rstrip("/") or "/",
                          exchange=args.exchange, symbol=args.symbol, batch_rows=args.batch_rows)


def run_backfill(args, console: Console) -> int:
    import apache_beam as beam

    from beam_pipelines.accounting import Accounting, counters_of
    from beam_pipelines.backfill import build_backfill
    from io_connectors.atomic_files import write_json_atomically
    from io_connectors.progress import set_progress_listener
    from runners.profiles import RunnerError, profile_for

    config = _backfill_config(args)
    try:
        profile = profile_for(args.runner)
        runner = profile.runner()
    except RunnerError as error:
        raise UserError(str(error)) from None
    total_bytes = sum(f.size for f in config.files)
    started = time.monotonic()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TextColumn("{task.fields[files]}"), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=args.no_progress, transient=False)
    with progress:
        task = progress.add_task("reading", total=total_bytes, files=f"0/{len(config.files)} files")
        done = {"files": 0}

        def on_progress(files=0, bytes=0):
            done["files"] += files
            progress.update(task, advance=bytes, files=f"{done['files']}/{len(config.files)} files",
                            description="reading" if done["files"] < len(config.files) else "building bars")

        set_progress_listener(on_progress)
        try:
            pipeline = beam.Pipeline(runner=runner, options=profile.options())
            build_backfill(pipeline, config)
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as error:  # a pipeline failure: one line here, the whole story in a log
            log = f"{config.out}/_ERROR.log"
            with open(log, "w") as handle:
                traceback.print_exc(file=handle)
            raise PipelineFailed(f"the pipeline failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                                 f" (full traceback in {log})") from None
        finally:
            set_progress_listener(None)
    elapsed = time.monotonic() - started
    accounting = Accounting.from_counters(counters_of(result))
    problems = accounting.problems()
    summary = {"command": "backfill", "source": config.source.name, "interval": config.spec.interval.text,
               "inputs": [f.path for f in config.files], "elapsed_seconds": round(elapsed, 3),
               "reconciled": not problems, "problems": problems, **accounting.as_dict()}
    write_json_atomically(summary, f"{config.out}/_SUMMARY.json")
    console.print(summary_table(accounting, elapsed, config.out))
    for problem in problems:
        console.print(f"[red]accounting does not reconcile: {problem}[/red]")
    return EXIT_UNRECONCILED if problems else 0


def summary_table(accounting, elapsed: float, out: str) -> Table:
    table = Table(title=f"cryptobeam backfill → {out}", show_header=True, header_style="bold")
    table.add_column("records", justify="left")
    table.add_column("count", justify="right")
    rate = accounting.records_in / elapsed if elapsed > 0 else 0.0
    rows = [
        ("records read", accounting.records_in),
        ("  in final bars", accounting.trades_in_final_bars),
        ("  dead-lettered", accounting.dead_letter_rows_written),
        *[(f"    {reason}", n) for reason, n in sorted(accounting.dead_letters_by_reason.items())],
        ("  duplicates", accounting.duplicates),
        ("bars written", accounting.bar_rows_written),
        ("  of which filled", accounting.filled_bars_written),
        ("bar files", accounting.bar_files_written),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    verdict = "[green]yes[/green]" if not accounting.problems() else "[red]NO[/red]"
    table.add_row("reconciled", verdict)
    table.add_row("elapsed", f"{elapsed:,.1f} s ({rate:,.0f} records/s)")
    return table


def list_sources(console: Console) -> int:
    from io_connectors.sources import SOURCES
    table = Table(title="input formats (--source)")
    table.add_column("name")
    table.add_column("what")
    for source in SOURCES.values():
        table.add_row(source.name, source.description)
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    console = Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "backfill":
            return run_backfill(args, console)
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


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
