"""What the ``cryptobeam`` commands share: exit codes, user errors, the bar and sink options,
and the end-of-run summary table."""

from __future__ import annotations

import argparse
import collections
import errno
import logging
import os
import sys
import traceback
import uuid
from typing import TYPE_CHECKING

from io_connectors.output_lock import OutputLocked, lock_output_directory
from io_connectors.paths import is_remote
from io_connectors.sinks import ALWAYS, SinkOptionError, offered, sink_targets
from runners.profiles import RUNNER_FLAGS, RunnerError, profile_for
from transforms.bar_kinds import BarsOptionError, parse_bars_options
from transforms.bar_spec import BarSpec
from transforms.consolidation_spec import ConsolidationSpec
from transforms.interval import IntervalError, parse_interval

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

EXIT_USER_ERROR = 2
EXIT_UNRECONCILED = 1
EXIT_PIPELINE_FAILED = 3


class UserError(Exception):
    """A problem with what the user asked for; shown as one line, never a traceback."""


class PipelineFailed(Exception):
    """The pipeline itself failed while running; shown as one line, with the traceback in a log file."""


class CommandParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see: {self.prog} --help)")


def parse_duration_seconds(text: str) -> int:
    """'0', '30s', '10m', '2h' -> seconds."""
    if text.strip() in ("0", "0s"):
        return 0
    try:
        return parse_interval(text).seconds
    except IntervalError:
        raise UserError(f"bad duration {text!r}: use e.g. 0, 30s, 10m, 2h") from None


def add_bar_options(command: argparse.ArgumentParser, allowed_lateness: str = "0") -> None:
    """What bars to build and how their panes fire: the same for a backfill and a stream."""
    command.add_argument(
        "--bars",
        action="append",
        metavar="KIND:SIZE",
        help="bars to build, each to its own table; repeat for several: time:1m (the default, "
        "to bars/), ticks:1000 (every N trades), volume:50 (every V base units), dollar:1e6 "
        "(every D quote units), consolidated:1m (one reference price per canonical pair across "
        "venues, to bars_consolidated/ with quality/), chain:1m (token transfers' activity and flows, "
        "docs/onchain.md), each kind to its own table",
    )
    command.add_argument(
        "--interval",
        default=None,
        help="time bar interval: 1s, 1m, 15m, 1h, 4h, 1d, 1w ... (default 1m; same as --bars time:1m)",
    )
    command.add_argument(
        "--fill-gaps", action="store_true", help="emit a bar for each empty interval (O=H=L=C=previous close, volume 0)"
    )
    command.add_argument("--early", default=None, help="early firing period, e.g. 5s (streams only)")
    command.add_argument(
        "--allowed-lateness", default=allowed_lateness, help=f"allowed lateness, e.g. 10m (default {allowed_lateness})"
    )
    command.add_argument("--accumulation", default="accumulating", help="accumulating or discarding panes")
    consolidated = command.add_argument_group("consolidated bars (--bars consolidated:1m)")
    consolidated.add_argument(
        "--partitions",
        type=int,
        default=12,
        help="equal partitions of each window; the price is the mean of their volume-weighted "
        "medians (default 12: 5 s partitions of 1m)",
    )
    consolidated.add_argument(
        "--deviation",
        default="2%",
        help="exclude a venue whose VWAP is further than this from the other venues' median; "
        "it comes back within half of it (default 2%%)",
    )
    consolidated.add_argument(
        "--stale-after", default="5m", help="exclude a venue with no trade for this long (default 5m)"
    )
    consolidated.add_argument(
        "--min-constituents",
        type=int,
        default=1,
        help="fewer included venues than this: the window has no price (default 1)",
    )
    consolidated.add_argument(
        "--quote-equivalent",
        action="append",
        metavar="QUOTE=AS",
        help="count one quote asset as another, e.g. USDT=USD (default: none; repeatable)",
    )
    chain = command.add_argument_group("on-chain tables (--bars chain:1h, from token transfers)")
    chain.add_argument(
        "--tokens",
        metavar="FILE",
        help="CSV chain,address,symbol,decimals,canonical_asset that extends or overrides the shipped "
        "token list (a token it lacks keeps its raw volume; its scaled volume is null)",
    )
    chain.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV address,label,entity: writes exchange_flows/, the flows into and out of each entity",
    )
    chain.add_argument(
        "--fuse",
        action="append",
        metavar="ASSET=TABLE:SERIES",
        help="an asset's on-chain activity beside a market series, window by window, to "
        "chain_market_fusion/: USDT=bars:binance:BTCUSDT or ETH=bars_consolidated:ETH/USD (repeatable)",
    )


def add_instruments_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--instruments",
        help="CSV exchange,symbol,base,quote that extends or overrides the shipped "
        "table of canonical instruments (e.g. XBTUSD -> BTC/USD)",
    )


def instruments_from_args(args) -> str | None:
    """The user's instruments file, checked now: a bad one is one line and exit 2, not a failed run."""
    if not args.instruments:
        return None
    # Arrow: the command line imports this module at start
    from io_connectors.instruments import InstrumentsError, read_instruments_file

    try:
        read_instruments_file(args.instruments)
    except InstrumentsError as error:
        raise UserError(str(error)) from None
    return args.instruments


def bar_spec_from_args(args):
    try:
        wanted = parse_bars_options(args.bars, args.interval or "1m", interval_given=bool(args.interval))
        if args.interval and args.bars and wanted.time_bars and wanted.interval != args.interval:
            raise UserError(
                f"--interval {args.interval} and --bars time:{wanted.interval} disagree: give the interval once"
            )
        if args.fill_gaps and not wanted.time_bars:
            raise UserError("--fill-gaps fills the empty windows of time bars: add --bars time:INTERVAL")
        return BarSpec.of(
            wanted.interval,
            fill_gaps=args.fill_gaps,
            early_firing_seconds=parse_duration_seconds(args.early) if args.early else None,
            allowed_lateness_seconds=parse_duration_seconds(args.allowed_lateness),
            accumulation=args.accumulation,
            time_bars=wanted.time_bars,
            thresholds=wanted.thresholds,
            consolidation=consolidation_from_args(args, wanted.consolidated),
            chain=chain_from_args(args, wanted.chain),
        )
    except (IntervalError, BarsOptionError, ValueError) as error:
        raise UserError(str(error)) from None


def chain_from_args(args, interval_text: str | None):
    """The ``ChainSpec`` of ``--bars chain:W`` and its tables (``--tokens``, ``--labels``, ``--fuse``), or None."""
    given = [name for name in ("tokens", "labels", "fuse") if getattr(args, name, None)]
    if interval_text is None:
        if given:
            raise UserError(f"--{given[0]} is for on-chain tables: add --bars chain:INTERVAL")
        return None
    # The token and label readers import Arrow: only on-chain tables need them
    from io_connectors.chain_tables import ChainTableError, chain_spec_from_files

    try:
        return chain_spec_from_files(args.tokens, args.labels, args.fuse or ())
    except ChainTableError as error:
        raise UserError(str(error)) from None


def consolidation_from_args(args, interval_text: str | None):
    """The ``ConsolidationSpec`` of ``--bars consolidated:W`` and its options, or None."""
    if interval_text is None:
        return None
    # The collectors' registry imports asyncio, rich and Arrow: only consolidated bars need it
    from io_connectors.collectors import FEEDS

    deviation_text = args.deviation.strip()
    try:
        deviation = float(deviation_text[:-1]) / 100 if deviation_text.endswith("%") else float(deviation_text)
    except ValueError:
        raise UserError(f"bad --deviation {args.deviation!r}: use a percentage, e.g. 2%") from None
    equivalents = []
    for text in args.quote_equivalent or []:
        quote, _, counted_as = text.partition("=")
        if not quote.strip() or not counted_as.strip():
            raise UserError(f"bad --quote-equivalent {text!r}: use QUOTE=AS, e.g. USDT=USD")
        equivalents.append((quote.strip().upper(), counted_as.strip().upper()))
    return ConsolidationSpec(
        parse_interval(interval_text),
        partitions=args.partitions,
        deviation=deviation,
        stale_after_seconds=parse_duration_seconds(args.stale_after),
        min_constituents=args.min_constituents,
        quote_equivalents=tuple(equivalents),
        sequential_id_exchanges=frozenset(n for n, feed in FEEDS.items() if feed.sequential_ids),
    )


def add_runner_options(command: argparse.ArgumentParser, default: str) -> None:
    """``--runner`` and the flags each runner needs; the same for a backfill and a stream."""
    group = command.add_argument_group("runner")
    group.add_argument(
        "--runner", default=default, help=f"direct, prism, flink, dataflow or portable (default {default})"
    )
    group.add_argument("--prism-location", help="prism: the binary (default: the one set-up built)")
    group.add_argument("--environment", help="flink/portable: Python workers LOOPBACK (default), PROCESS or EXTERNAL")
    group.add_argument(
        "--environment-config", help="flink/portable: worker pool host:port (EXTERNAL) or boot command JSON (PROCESS)"
    )
    group.add_argument("--flink-master", help="flink: the JobManager's REST address, host:port")
    group.add_argument("--flink-version", help="flink: 1.19 (default), 1.20, 2.0, 2.1 or 2.2, matching the cluster")
    group.add_argument("--flink-job-server-jar", help="flink: Beam's job-server jar (default: the one set-up fetched)")
    group.add_argument("--parallelism", type=int, help="flink: parallelism (default 2)")
    group.add_argument(
        "--checkpointing-interval",
        help=(
            "flink streams: Flink checkpoints every, e.g. 30s "
            "(default: none; read docs/operations.md#flink before using)"
        ),
    )
    group.add_argument("--project", help="dataflow: Google Cloud project")
    group.add_argument("--region", help="dataflow: region, e.g. europe-west1")
    group.add_argument("--temp-location", help="dataflow: gs:// path for temporary files")
    group.add_argument("--staging-location", help="dataflow: gs:// path for staged code (default: <temp>/staging)")
    group.add_argument("--job-name", help="dataflow: job name")
    group.add_argument("--max-workers", type=int, help="dataflow: autoscaling ceiling (default 10)")
    group.add_argument("--machine-type", help="dataflow: worker machine type (default n2-standard-2)")
    group.add_argument("--job-endpoint", help="portable: Beam job service host:port")


def runner_profile_from_args(args, streaming: bool, dry_run: bool = False):
    flags = {name: getattr(args, name) for name in RUNNER_FLAGS}
    if args.checkpointing_interval:
        flags["checkpointing_interval_ms"] = parse_duration_seconds(args.checkpointing_interval) * 1000
    if args.parallelism is not None and args.parallelism < 1:
        raise UserError("--parallelism must be at least 1")
    try:
        return profile_for(args.runner, streaming=streaming, dry_run=dry_run, **flags)
    except RunnerError as error:
        raise UserError(str(error)) from None


def add_sink_options(command: argparse.ArgumentParser, streaming: bool) -> None:
    """``--sink`` and each sink's own options, from the registry (``io_connectors.sinks``)."""
    sinks = offered(streaming)
    always = [name for name, sink in sinks.items() if sink.use(streaming) == ALWAYS]
    extra = [name for name, sink in sinks.items() if sink.use(streaming) != ALWAYS]
    command.add_argument(
        "--sink",
        action="append",
        default=[],
        help=f"extra output besides {', '.join(always)}: {', '.join(extra)} "
        "(repeatable; 'cryptobeam sinks' lists them)",
    )
    for sink in sinks.values():
        sink.add_options(command, streaming)


def sink_targets_from_args(args, streaming: bool):
    """The sinks the run writes to, each with its target (``io_connectors.sinks.sink_targets``)."""
    try:
        return sink_targets(args, streaming)
    except SinkOptionError as error:
        raise UserError(str(error)) from None


MAX_NAME_CHARACTERS = 100
"""``--symbol`` and ``--exchange`` values longer than this are surely typing mistakes."""


def check_name_option(flag: str, value: str | None) -> None:
    if value is not None and not 0 < len(value) <= MAX_NAME_CHARACTERS:
        raise UserError(f"{flag} must be 1 to {MAX_NAME_CHARACTERS} characters, not {len(value):,}")


class PipelineLog(logging.Handler):
    """Beam's runners log a failing step's traceback at ERROR before raising it. The command
    reports a failure in one line and keeps the traceback in ``_ERROR.log``, so those records are
    kept here (for that log) instead of reaching the terminal; warnings still reach stderr."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self.lines.append(text)
        else:
            print(text, file=sys.stderr)

    @classmethod
    def install(cls) -> "PipelineLog":
        """The process's one handler (a command run twice in a process, as tests do, adds no
        second one), emptied of what an earlier run logged."""
        runners = logging.getLogger("apache_beam.runners")
        handler = next((h for h in runners.handlers if isinstance(h, cls)), None)
        if handler is None:
            handler = cls()
            runners.addHandler(handler)
            runners.propagate = False
        handler.lines.clear()
        return handler


ERROR_LOG = "_ERROR.log"


def write_error_log(out: str, pipeline_log: PipelineLog | None = None) -> str:
    """The current exception's traceback (after what the runners logged) in ``out/_ERROR.log``;
    returns where it went, or why it could not be written (a full disk must not hide the error)."""
    path = os.path.join(out, ERROR_LOG)
    try:
        with open(path, "w") as handle:
            for line in pipeline_log.lines if pipeline_log else ():
                print(line, file=handle)
            traceback.print_exc(file=handle)
        return f"full traceback in {path}"
    except OSError as error:
        return f"no traceback kept: {path} could not be written: {error.strerror or error}"


def lock_output(out: str) -> None:
    """Hold ``out`` for this command (``io_connectors.output_lock``); a held one is a user error."""
    try:
        lock_output_directory(out)
    except OutputLocked as error:
        raise UserError(str(error)) from None


def check_writable(out: str) -> None:
    if is_remote(out):
        return
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-probe-{uuid.uuid4().hex}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise  # the machine's fault, not the user's: the command reports it as a failure
        raise UserError(f"output directory {out!r} is not writable: {error.strerror or error}") from None


def progress_bar(disabled: bool) -> Progress:
    """A long command's progress on stderr: a bar, done/total, the task's ``detail`` and the times."""
    # rich: the command line imports this module at start, and a local backfill's workers wait for it
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disabled,
        transient=False,
    )


def summary_table(
    accounting, elapsed: float, out: str, chunks: int = 1, run: int = 1, skipped: int = 0, command: str = "backfill"
) -> Table:
    # rich: the command line imports this module at start, and a local backfill's workers wait for it
    from rich.table import Table

    table = Table(title=f"cryptobeam {command} → {out}", show_header=True, header_style="bold")
    table.add_column("records", justify="left")
    table.add_column("count", justify="right")
    rate = accounting.all_records_in / elapsed if elapsed > 0 and run else 0.0
    transfers = accounting.token_transfers
    rows = [
        *(
            [("chunks (run / skipped as complete)", f"{chunks:,} ({run:,} / {skipped:,})")]
            if command == "backfill"
            else []
        ),
        ("records read", accounting.records_in),
        ("  in final bars", accounting.trades_in_final_bars),
        ("  dead-lettered", accounting.dead_letter_rows_written),
        *[(f"    {reason}", n) for reason, n in sorted(accounting.dead_letters_by_reason.items())],
        ("  duplicates", accounting.duplicates),
        *(
            [
                (
                    "status records read (used / duplicates)",
                    f"{accounting.feed_status.get('records_in', 0):,} "
                    f"({accounting.feed_status.get('unique_trades', 0):,} / "
                    f"{accounting.feed_status.get('duplicates', 0):,})",
                )
            ]
            if accounting.feed_status
            else []
        ),
        *(
            [
                ("token transfers read", transfers.get("records_in", 0)),
                ("  in final token activity", transfers.get("in_aggregates", 0)),
                ("  retracted (and retractions)", transfers.get("retracted", 0)),
                ("  duplicates", transfers.get("duplicates", 0)),
            ]
            if transfers
            else []
        ),
        *(
            [
                (
                    "blocks read (used / duplicates)",
                    f"{accounting.blocks.get('records_in', 0):,} "
                    f"({accounting.blocks.get('used', 0):,} / {accounting.blocks.get('duplicates', 0):,})",
                )
            ]
            if accounting.blocks
            else []
        ),
        (
            "unknown instruments: records (distinct symbols)",
            f"{accounting.instrument_unknown_records:,} ({accounting.distinct_unknown_instruments:,})",
        ),
        ("bars written", accounting.bar_rows_written),
        ("  rejected by a sink (dead-lettered)", accounting.sink_rejections),
        ("  of which filled", accounting.filled_bars_written),
        *(
            [(f"  {table}", n) for table, n in sorted(accounting.rows_by_table.items())]
            if set(accounting.rows_by_table) - {"bars"}
            else []
        ),
        ("bar files", accounting.bar_files_written),
        *(
            [("worst venues (consolidated bars)", "")] + [(f"  {venue}", what) for venue, what in worst]
            if (worst := accounting.worst_venues())
            else []
        ),
    ]
    for name, value in rows:
        table.add_row(name, value if isinstance(value, str) else f"{value:,}")
    verdict = "[green]yes[/green]" if not accounting.problems() else "[red]NO[/red]"
    table.add_row("reconciled", verdict)
    table.add_row("elapsed", f"{elapsed:,.1f} s ({rate:,.0f} records/s)")
    return table
