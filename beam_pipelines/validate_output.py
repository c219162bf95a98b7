"""``cryptobeam validate OUT``: re-check an output directory from scratch.

Manifests against the files on disk; record accounting per chunk (recounted from the files
themselves) and in total; for every table of bars, bar invariants, duplicate bars, missing
trade-id ranges where ids are sequential, and missing intervals (time bars) or ordinals
(information bars). Works on backfill output (with manifests) and on stream output (bars only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa

from beam_pipelines.accounting import Accounting
from beam_pipelines.manifest import SEAM_FILE, ChunkManifest
from beam_pipelines.validate_chain_output import check_chain_rows, transfers_on_disk
from beam_pipelines.validate_consolidated_output import check_consolidated_bars, check_venue_quality
from beam_pipelines.written_files import written_in_files
from io_connectors.bar_reader import read_bars
from io_connectors.bar_tables import every_bar_directory, every_table, run_of
from transforms.computations import TIME_BARS, counted_table
from transforms.computations.consolidated_bars import CONSOLIDATED_BARS, VENUE_QUALITY
from transforms.computations.token_flows import TOKEN_ACTIVITY
from transforms.interval import parse_interval

SEQUENTIAL_ID_EXCHANGES = ("binance",)  # trade ids without holes: aggTrade ids and trade ids
RELATIVE_TOLERANCE = 1e-12  # vwap is a ratio of two rounded sums


@dataclass
class Report:
    checked: dict = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def violation(self, message: str) -> None:
        self.violations.append(message)


def _bars(out: str, report: Report, name: str = TIME_BARS.name) -> pa.Table | None:
    if not os.path.isdir(os.path.join(out, name)):
        return None
    unreadable: list[tuple[str, str]] = []
    table = read_bars(out, unreadable, name)
    for path, why in unreadable:
        report.violation(f"{os.path.relpath(path, out)} cannot be read: {why}")
    return table


def accounting_on_disk(manifest: ChunkManifest, out: str) -> tuple[int, int, int, int]:
    """(trades in final bars, duplicates absorbed, dead letters, token transfers in final token
    activity) counted from the chunk's files; a file that cannot be read counts nothing
    (``manifest.problems`` or ``_bars`` reports it)."""
    bar_files: dict[str, list[str]] = {}
    dead_letter_files = []
    for record in manifest.outputs:
        path = record.location(out)
        if os.path.exists(path) and path.endswith(".parquet"):  # other sinks (Avro) repeat the Parquet bars
            top = os.path.relpath(path, out).split(os.sep)[0]
            if top == "dead_letter":
                dead_letter_files.append(path)
            else:
                bar_files.setdefault(top, []).append(path)
    # Every table's final bars hold each unique trade, and each window's duplicates, once: one
    # table is counted, time bars when the chunk built them.
    counted = counted_table(bar_files)
    written = written_in_files(bar_files.get(counted, []), dead_letter_files, unreadable=[])
    # A table that leaves some trades out by its definition counted them (and their windows'
    # duplicates) as it did.
    accounting = Accounting.from_counters(manifest.counts)
    skipped = accounting.skipped_by_table.get(counted, 0)
    skipped_duplicates = accounting.skipped_duplicates_by_table.get(counted, 0)
    return (
        written["trades_in_final_bars"] + skipped,
        written["duplicates_in_final_bars"] + skipped_duplicates,
        written["dead_letter_rows_written"],
        transfers_on_disk(bar_files.get(TOKEN_ACTIVITY.name, [])),
    )


def check_manifests(out: str, report: Report) -> list[ChunkManifest]:
    manifests, damaged = ChunkManifest.scan(out)
    report.checked["chunks"] = len(manifests) + len(damaged)
    for chunk_id, why in damaged.items():
        report.violation(f"chunk {chunk_id}: its manifest is damaged ({why}); run the backfill again to redo it")
    for manifest in manifests:
        for problem in manifest.problems(out, check_inputs=False):
            report.violation(problem)
        for problem in Accounting.from_counters(manifest.counts).problems():
            report.violation(f"chunk {manifest.chunk_id}: {problem}")
        trades, duplicates, dead, transfers = accounting_on_disk(manifest, out)
        chunk = Accounting.from_counters(manifest.counts)
        records = chunk.records_in + chunk.token_transfers.get("records_in", 0) + chunk.blocks.get("records_in", 0)
        transfer_duplicates = chunk.token_transfers.get("duplicates", 0)
        # Blocks serve the join and are written to no table: those not dead-lettered are counted.
        if records != trades + duplicates + dead + transfers + transfer_duplicates + chunk.blocks_accounted:
            report.violation(
                f"chunk {manifest.chunk_id}: records read ({records}) != trades in final bars on disk "
                f"({trades}) + duplicates ({duplicates}) + dead letters on disk ({dead})"
                + (
                    f" + token transfers in final token activity on disk ({transfers}) and duplicated "
                    f"({transfer_duplicates})"
                    if chunk.token_transfers
                    else ""
                )
                + (f" + blocks used or duplicated ({chunk.blocks_accounted})" if chunk.blocks else "")
            )
    total = Accounting.total([Accounting.from_counters(m.counts) for m in manifests])
    for problem in total.problems():
        report.violation(f"all chunks: {problem}")
    report.checked["records_in"] = total.all_records_in
    check_every_file_is_recorded(out, manifests, report)
    return manifests


def check_every_file_is_recorded(out: str, manifests: list[ChunkManifest], report: Report) -> None:
    """A backfill's file (named after its chunk, not a stream's pane file) that no manifest records
    holds records no accounting covers: its manifest was lost."""
    recorded = {os.path.normpath(r.location(out)) for m in manifests for r in m.outputs}
    for top in (*every_bar_directory(), "dead_letter"):
        for directory, _subdirectories, names in os.walk(os.path.join(out, top)):
            for name in names:
                path = os.path.normpath(os.path.join(directory, name))
                if name.startswith("part-") and not run_of(name) and name != SEAM_FILE and path not in recorded:
                    report.violation(
                        f"{os.path.relpath(path, out)} is recorded by no manifest, so its records are not accounted for"
                    )


def check_bars(table: pa.Table, report: Report, fill_gaps: bool | None) -> None:
    rows = table.to_pylist()
    report.checked["bars"] = len(rows)
    seen, latest = set(), {}
    for bar in rows:
        name = f"{bar['exchange']}/{bar['symbol']} {bar['window_start'].isoformat()}"
        _check_pane_once(bar, ("window_start", "is_filled"), seen, name, report)
        interval = parse_interval(bar["interval"]).seconds
        if (bar["window_end"] - bar["window_start"]).total_seconds() != interval:
            report.violation(f"{name}: window_end - window_start is not {bar['interval']}")
        _check_values(bar, name, report)
        pair = (bar["exchange"], bar["symbol"])
        if (
            bar["window_start"] not in latest.setdefault(pair, {})
            or bar["pane_index"] >= latest[pair][bar["window_start"]]["pane_index"]
        ):
            latest[pair][bar["window_start"]] = bar
    for (exchange, symbol), windows in latest.items():
        starts = sorted(windows)
        step = parse_interval(windows[starts[0]]["interval"]).seconds
        missing = sum(int((b - a).total_seconds() // step) - 1 for a, b in zip(starts, starts[1:]))
        if missing:
            message = f"{exchange}/{symbol}: {missing} interval(s) without a bar between its first and last bar"
            report.violation(message) if fill_gaps else report.notes.append(message)
        if exchange.split("-")[0] in SEQUENTIAL_ID_EXCHANGES:
            check_trade_ids(exchange, symbol, [windows[s] for s in starts], report)


def check_trade_ids(exchange: str, symbol: str, bars: list[dict], report: Report) -> None:
    """Consecutive bars of an exchange with sequential ids must not skip ids."""
    real = [b for b in bars if not b["is_filled"] and b["first_trade_id"] and b["last_trade_id"]]
    holes = []
    for previous, bar in zip(real, real[1:]):
        try:
            expected, got = int(previous["last_trade_id"]) + 1, int(bar["first_trade_id"])
        except ValueError:
            return  # not numeric ids after all
        if got > expected:
            holes.append((expected, got - 1))
    if holes:
        total = sum(b - a + 1 for a, b in holes)
        first = holes[0]
        report.violation(
            f"{exchange}/{symbol}: {total} trade id(s) missing in {len(holes)} range(s), first {first[0]}..{first[1]}"
        )


def check_information_bars(table: pa.Table, report: Report, name: str) -> None:
    """Per (exchange, symbol, day): each bar's panes unique, its values consistent, its final
    ordinals 0, 1, ... without a hole, every bar but the day's last at its threshold, and no
    trade id skipped between bars where ids are sequential."""
    rows = table.to_pylist()
    report.checked[name] = len(rows)
    seen, newest = set(), {}
    for bar in rows:
        label = f"{name} {bar['exchange']}/{bar['symbol']} {bar['day']} #{bar['ordinal']}"
        _check_pane_once(bar, ("day", "ordinal"), seen, label, report)
        if (
            bar["window_end"] < bar["window_start"]
            or bar["window_start"].date().isoformat() != bar["day"]
            or bar["window_end"].date().isoformat() != bar["day"]
        ):
            report.violation(f"{label}: its trades are not within its day, first to last")
        _check_values(bar, label, report)
        day = newest.setdefault((bar["exchange"], bar["symbol"], bar["day"]), {})
        if bar["is_final"] and (bar["ordinal"] not in day or bar["file"] >= day[bar["ordinal"]]["file"]):
            day[bar["ordinal"]] = bar
    for (exchange, symbol, day), bars in sorted(newest.items()):
        ordinals = sorted(bars)
        if ordinals != list(range(len(ordinals))):
            report.violation(f"{name} {exchange}/{symbol} {day}: final bars' ordinals are not 0..{len(ordinals) - 1}")
        short = [o for o in ordinals[:-1] if not bars[o]["threshold_reached"]]
        if short:
            report.violation(
                f"{name} {exchange}/{symbol} {day}: bar #{short[0]} is short of its threshold but is not the day's last"
            )
    by_pair = {}
    for (exchange, symbol, day), bars in sorted(newest.items()):
        by_pair.setdefault((exchange, symbol), []).extend(bars[o] for o in sorted(bars))
    for (exchange, symbol), bars in by_pair.items():
        if exchange.split("-")[0] in SEQUENTIAL_ID_EXCHANGES:
            check_trade_ids(exchange, symbol, bars, report)


def _check_pane_once(bar: dict, identity: tuple[str, ...], seen: set, name: str, report: Report) -> None:
    # A restarted stream rebuilds open bars, panes numbered afresh: a pane is unique per run.
    key = (bar["exchange"], bar["symbol"], *(bar[k] for k in identity), bar["pane_index"], run_of(bar["file"]))
    if key in seen:
        report.violation(f"{name}: the same bar pane appears twice")
    seen.add(key)


def _check_values(bar: dict, name: str, report: Report) -> None:
    low, high = bar["low"], bar["high"]
    if not (low <= bar["open"] <= high and low <= bar["close"] <= high):
        report.violation(f"{name}: open/close outside [low, high]")
    vwap = bar["vwap"]
    slack = RELATIVE_TOLERANCE * abs(high)
    if vwap is not None and not (low - slack <= vwap <= high + slack):
        report.violation(f"{name}: vwap {vwap} outside [low, high]")
    if bar["volume"] < 0 or bar["trade_count"] < 0:
        report.violation(f"{name}: negative volume or trade count")


def validate(out: str) -> Report:
    report = Report()
    manifests = check_manifests(out, report)
    fill_gaps = any(m.settings.get("fill_gaps") for m in manifests) if manifests else None
    found = False
    read = {}
    for table in every_table():
        bars = _bars(out, report, table.name)
        if bars is None:
            continue
        found = True
        read[table.name] = bars
        if table == TIME_BARS:
            check_bars(bars, report, fill_gaps)
        elif table == CONSOLIDATED_BARS:
            check_consolidated_bars(bars, report)
        elif table == VENUE_QUALITY:
            check_venue_quality(bars, read.get(CONSOLIDATED_BARS.name), report)
        elif table.record_type != "trade":
            check_chain_rows(bars, report, table)
        else:
            check_information_bars(bars, report, table.name)
    if not found:
        report.violation(f"no bars under {out}: neither bars/ nor any other table of bars")
    return report
