"""Backfill benchmark: cryptobeam on the local runner against polars and duckdb, same input, same bars.

    .venv/bin/python benchmarks/backfill.py --suite  # the issue-6 set, 3 rounds each: prints tables, writes JSON
    .venv/bin/python benchmarks/backfill.py [--trades 1000000] [--symbols 3] [--days 1] [--format parquet|csv]
    .venv/bin/python benchmarks/backfill.py --scaling 1000000,3000000,10000000     # time per trade vs size
    .venv/bin/python benchmarks/backfill.py --consolidated [--per-venue 10000000]  # issue 24, 3 rounds
    .venv/bin/python benchmarks/backfill.py --consolidated --per-venue 1000000 --profile

``--suite`` runs 1M and 10M trades of 3 symbols over a day, one month of a single symbol in
Parquet and in Binance CSV, and a windows sweep (1k to 43.2k one-minute windows of one symbol at
a constant 230 trades per window). Peak memory is the peak of the summed PSS (shared pages
split between the processes sharing them) of cryptobeam's process, its fork server and its
chunk workers, sampled every second. "net" times subtract cryptobeam's fixed start-up, measured
on a 1,000-trade input in the same run.

Generates N synthetic trades (Parquet, or Binance aggTrades CSV files per symbol and day),
computes 1-minute bars three ways, checks that they agree, and prints trades/s, ratios and
cryptobeam's peak PSS (also written as JSON under
benchmarks/results/). ``--scaling`` repeats the run for each size and prints µs per trade, which
should stay flat. polars and duckdb read the same input as cryptobeam: with ``--format csv``,
the Binance CSV files (polars reading the Parquet copy is timed too, as ``polars_from_parquet_s``).

``--consolidated`` (not part of ``--suite``) times consolidated bars across venues: one UTC day of
BTC/USD on three venues (binance BTCUSDT, coinbase BTC-USD, kraken XBTUSD, ``--per-venue`` trades
each, one Parquet file each; kraken trades 0.8 % high for twenty minutes, short of the 2 % that
excludes a venue), run as (a) ``--bars time:1m``, (a1) the same in one chunk on one worker, the
shape consolidation forces (a day of every venue in one chunk), and (b) ``--bars time:1m --bars
consolidated:1m --quote-equivalent USDT=USD``. It prints each run's time, trades/s and peak PSS,
the extra time of (b) over (a) against the issue's target (at most +50 %), and whether (b)'s final
consolidated prices equal, exactly, those of a polars reference written from the method's text
(the partitions' lower volume-weighted medians, their mean with ``math.fsum``); the reference does
not judge venues, so the check also asserts that none was excluded. ``--profile`` instead runs
(a1) and (b) in-process under cProfile and prints where the time goes.

``--repeat N`` times each input in N rounds of polars, duckdb and cryptobeam (3 with ``--suite``
and ``--consolidated``).
Times are medians, and the ratio is the median of each round's own ratio: on a shared VM single
runs of the same command vary too much to compare one by one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.synthetic import CONSOLIDATED_VENUES, write_synthetic_parquet, write_synthetic_venues_parquet  # noqa: E402


def _polars_bars_of(trades, interval_us: int, ties: list[str]) -> pl.DataFrame:
    """1-minute bars of trades with exchange, symbol, t (µs), price and amount; ``ties`` orders
    trades of one microsecond (open and close are the first and last)."""
    bars = (
        trades.with_columns(window_start=(pl.col("t") // interval_us) * interval_us)
        .sort(["symbol", "t", *ties])
        .group_by(["exchange", "symbol", "window_start"], maintain_order=True)
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("amount").sum(),
            quote_volume=(pl.col("price") * pl.col("amount")).sum(),
            trade_count=pl.len(),
        )
    )
    return bars.collect() if isinstance(bars, pl.LazyFrame) else bars


def _duckdb_bars_of(trades_sql: str, interval_us: int, ties: str):
    """The same bars in SQL, from a query giving exchange, symbol, us, price and amount."""
    return duckdb.sql(f"""
        WITH t AS ({trades_sql})
        SELECT exchange, symbol, (us // {interval_us}) * {interval_us} AS window_start,
               arg_min(price, (us, {ties})) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, (us, {ties})) AS close, sum(amount) AS volume,
               sum(price * amount) AS quote_volume, count(*) AS trade_count
        FROM t GROUP BY ALL ORDER BY exchange, symbol, window_start""").pl()


def polars_bars(path: str, interval_us: int) -> pl.DataFrame:
    frame = pl.read_parquet(path)
    return _polars_bars_of(
        frame.with_columns(t=pl.col("event_time").cast(pl.Int64), id_len=pl.col("trade_id").str.len_chars()),
        interval_us,
        ["id_len", "trade_id"],
    )


def duckdb_bars(path: str, interval_us: int):
    return _duckdb_bars_of(
        f"SELECT *, epoch_us(event_time) AS us FROM read_parquet('{path}')", interval_us, "length(trade_id), trade_id"
    )


# Binance aggTrades CSV columns, and the symbol in a file's name, for the references reading it.
AGG_TRADES_COLUMNS = {
    "trade_id": "BIGINT",
    "price": "DOUBLE",
    "amount": "DOUBLE",
    "first_trade_id": "BIGINT",
    "last_trade_id": "BIGINT",
    "ms": "BIGINT",
    "is_buyer_maker": "BOOLEAN",
    "is_best_match": "BOOLEAN",
}
SYMBOL_IN_NAME = r"([A-Z0-9]+)-aggTrades-[^/]*$"


def polars_bars_csv(pattern: str, interval_us: int) -> pl.DataFrame:
    """The same bars from Binance aggTrades CSV files, as a polars user would read them."""
    types = {"BIGINT": pl.Int64, "DOUBLE": pl.Float64, "BOOLEAN": pl.Boolean}
    frame = pl.scan_csv(
        pattern,
        has_header=False,
        schema={k: types[v] for k, v in AGG_TRADES_COLUMNS.items()},
        include_file_paths="path",
    )
    return _polars_bars_of(
        frame.with_columns(
            exchange=pl.lit("binance"), t=pl.col("ms") * 1000, symbol=pl.col("path").str.extract(SYMBOL_IN_NAME)
        ),
        interval_us,
        ["trade_id"],
    )


def duckdb_bars_csv(pattern: str, interval_us: int):
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in AGG_TRADES_COLUMNS.items())
    return _duckdb_bars_of(
        f"""SELECT *, 'binance' AS exchange, ms * 1000 AS us, regexp_extract(filename, '{SYMBOL_IN_NAME}', 1) AS symbol
            FROM read_csv('{pattern}', header = false, columns = {{{columns}}}, filename = true)""",
        interval_us,
        "trade_id",
    )


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def tree_sample(root: int, with_memory: bool = True) -> tuple[float, dict[int, float]]:
    """(summed PSS in MB, CPU seconds so far per process) of a process and all its descendants.
    PSS is slow to read on large processes (the kernel walks their page tables), so
    ``with_memory=False`` skips it.

    PSS, not RSS: chunk workers fork from a server that has imported Beam, Arrow and polars, and
    summed RSS would count those shared pages once per process."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    members, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in members} - members
        grew = bool(found)
        members |= found
    pss_kb = 0
    for pid in members if with_memory else ():
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                pss_kb += next((int(line.split()[1]) for line in handle if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return pss_kb / 1024, {pid: cpu[pid] for pid in members if pid in cpu}


def cryptobeam_bars(inputs: str, source: str, out: str) -> tuple[pl.DataFrame, float, float]:
    """Bars from the CLI in a process of its own; returns them, the peak PSS (MB) of that process
    with its fork server and chunk workers, and the CPU seconds they all used (user + system)."""
    peak_mb, cpu_s = run_cryptobeam(
        ["backfill", "--source", source, "--input", inputs, "--interval", "1m", "--out", out, "--no-progress"]
    )
    bars = pl.read_parquet(f"{out}/bars/**/*.parquet", hive_partitioning=True).filter(~pl.col("is_filled"))
    return bars, peak_mb, cpu_s


def run_cryptobeam(arguments: list[str]) -> tuple[float, float]:
    """Runs the CLI with ``arguments`` in a process of its own; returns the peak PSS (MB) of that
    process with its fork server and chunk workers, and the CPU seconds they all used.

    The workers are the fork server's children, which the CLI never waits for, so their CPU is
    sampled from /proc every 0.25 s (a worker's last 0.25 s can be missed); the CLI's own comes
    from the kernel when it exits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "cryptobeam"), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = {"mb": 0.0}
    descendants_cpu: dict[int, float] = {}
    done = threading.Event()

    def sample():
        ticks = 0
        while not done.wait(0.25):
            ticks += 1
            mb, cpu = tree_sample(process.pid, with_memory=ticks % 4 == 0)  # memory once a second
            peak["mb"] = max(peak["mb"], mb)
            for pid, seconds in cpu.items():
                if pid != process.pid:
                    descendants_cpu[pid] = max(descendants_cpu.get(pid, 0.0), seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"cryptobeam exited {process.returncode}: {stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) + sum(descendants_cpu.values())
    return peak["mb"], cpu_s


def write_binance_csv(trades_path: str, directory: str) -> str:
    """The same trades as Binance aggTrades CSV files, one per symbol and day, as Binance publishes them."""
    frame = pl.read_parquet(trades_path).with_columns(
        ms=pl.col("event_time").cast(pl.Int64) // 1000, day=pl.col("event_time").dt.date()
    )
    for (symbol, day), part in frame.group_by(["symbol", "day"]):
        part.select(
            pl.col("trade_id"),
            pl.col("price"),
            pl.col("amount"),
            pl.col("trade_id").alias("first"),
            pl.col("trade_id").alias("last"),
            pl.col("ms"),
            (pl.col("side") == "sell").alias("maker"),
            pl.lit(True).alias("best"),
        ).write_csv(os.path.join(directory, f"{symbol}-aggTrades-{day}.csv"), include_header=False)
    return os.path.join(directory, "*-aggTrades-*.csv")


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def agree(reference: pl.DataFrame, ours: pl.DataFrame) -> bool:
    ours = ours.with_columns(pl.col("window_start").cast(pl.Int64)).sort(["symbol", "window_start"])
    reference = reference.sort(["symbol", "window_start"])
    if ours.height != reference.height:
        return False
    for column in ("open", "high", "low", "close", "volume", "quote_volume"):
        if not np.allclose(ours[column].to_numpy(), reference[column].to_numpy(), rtol=1e-9, atol=0):
            return False
    return ours["trade_count"].to_list() == reference["trade_count"].to_list()


def run_once(trades: int, symbols: list[str], days: float, input_format: str, repeat: int = 1) -> dict:
    """One input, timed ``repeat`` times in rounds of polars, duckdb, cryptobeam: times are the
    medians, the ratio the median of the rounds' own ratios (each compares runs seconds apart)."""
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trades.parquet")
        write_synthetic_parquet(path, trades, symbols, days)
        interval_us = 60_000_000
        inputs, source = (
            (write_binance_csv(path, tmp), "binance-aggtrades") if input_format == "csv" else (path, "parquet")
        )
        # The references read the same input as cryptobeam; for CSV, polars from Parquet is kept too.
        polars_of, duckdb_of = (
            (polars_bars_csv, duckdb_bars_csv) if input_format == "csv" else (polars_bars, duckdb_bars)
        )
        for k in range(repeat):
            polars_result, polars_s = timed(polars_of, inputs, interval_us)
            duck_result, duck_s = timed(duckdb_of, inputs, interval_us)
            polars_parquet_s = timed(polars_bars, path, interval_us)[1] if input_format == "csv" else polars_s
            out = os.path.join(tmp, f"out{k}")
            (ours, peak_pss_mb, cpu_s), ours_s = timed(cryptobeam_bars, inputs, source, out)
            shutil.rmtree(out)
            rounds.append(
                {
                    "ours_s": ours_s,
                    "polars_s": polars_s,
                    "duck_s": duck_s,
                    "peak": peak_pss_mb,
                    "cpu": cpu_s,
                    "ratio": ours_s / polars_s,
                    "windows": ours.height,
                    "polars_parquet_s": polars_parquet_s,
                    "agree_polars": agree(polars_result, ours),
                    "agree_duckdb": agree(duck_result, ours),
                }
            )

    def median(key):
        return statistics.median(r[key] for r in rounds)

    ours_s, polars_s, duck_s = median("ours_s"), median("polars_s"), median("duck_s")
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "format": input_format,
        "trades": trades,
        "symbols": len(symbols),
        "windows": rounds[0]["windows"],
        "rounds": repeat,
        "cryptobeam_s": round(ours_s, 3),
        "polars_s": round(polars_s, 3),
        "duckdb_s": round(duck_s, 3),
        "cryptobeam_s_each": [round(r["ours_s"], 3) for r in rounds],
        "cryptobeam_trades_per_s": round(trades / ours_s),
        "polars_trades_per_s": round(trades / polars_s),
        "duckdb_trades_per_s": round(trades / duck_s),
        "polars_over_cryptobeam": round(median("ratio"), 2),
        "polars_over_cryptobeam_each": [round(r["ratio"], 2) for r in rounds],
        "polars_from_parquet_s": round(median("polars_parquet_s"), 3),
        "duckdb_over_cryptobeam": round(ours_s / duck_s, 2),
        "agree_with_polars": all(r["agree_polars"] for r in rounds),
        "agree_with_duckdb": all(r["agree_duckdb"] for r in rounds),
        "cryptobeam_peak_pss_mb": round(max(r["peak"] for r in rounds)),
        "cryptobeam_us_per_trade": round(ours_s / trades * 1e6, 3),
        "cryptobeam_cpu_s": round(median("cpu"), 3),
    }


SUITE = [  # (label, trades, symbols, days, format)
    ("1M trades, 3 symbols, 1 day", 1_000_000, 3, 1.0, "parquet"),
    ("10M trades, 3 symbols, 1 day", 10_000_000, 3, 1.0, "parquet"),
    ("1 symbol, 30 days, Parquet", 10_000_000, 1, 30.0, "parquet"),
    ("1 symbol, 30 days, Binance CSV", 10_000_000, 1, 30.0, "csv"),
]
SWEEP_WINDOWS = (1_000, 5_000, 20_000, 43_200)
SWEEP_TRADES_PER_WINDOW = 230


def with_net(result: dict, startup: dict, label: str) -> dict:
    """Adds wall and CPU time per trade net of the fixed start-up (``startup``: a 1,000-trade run)."""
    net = max(result["cryptobeam_s"] - startup["cryptobeam_s"], 1e-9)
    net_cpu = max(result["cryptobeam_cpu_s"] - startup["cryptobeam_cpu_s"], 1e-9)
    return {
        "label": label,
        **result,
        "startup_s": round(startup["cryptobeam_s"], 3),
        "net_s": round(net, 3),
        "net_us_per_trade": round(net / result["trades"] * 1e6, 3),
        "net_cpu_us_per_trade": round(net_cpu / result["trades"] * 1e6, 3),
        "throughput_vs_polars": round(1 / result["polars_over_cryptobeam"], 3),
    }


def ratio_range(result: dict) -> str:
    """The rounds' own polars/cryptobeam ratios, lowest to highest."""
    each = result["polars_over_cryptobeam_each"]
    return f"{min(each):.1f}-{max(each):.1f}"


def print_suite(runs: list[dict], sweep: list[dict]) -> None:
    table = Table(
        title=f"cryptobeam backfill vs polars and duckdb, 1m bars, {date.today()}, {platform.machine()} "
        f"{os.cpu_count()} cores"
    )
    for column in (
        "input",
        "trades",
        "windows",
        "cryptobeam s",
        "trades/s",
        "net CPU µs/trade",
        "polars s",
        "duckdb s",
        "vs polars (rounds)",
        "polars from Parquet s",
        "peak PSS MB",
        "agree",
    ):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(
            r["label"],
            f"{r['trades']:,}",
            f"{r['windows']:,}",
            f"{r['cryptobeam_s']:.2f}",
            f"{r['cryptobeam_trades_per_s']:,}",
            f"{r['net_cpu_us_per_trade']:.2f}",
            f"{r['polars_s']:.2f}",
            f"{r['duckdb_s']:.2f}",
            f"1/{r['polars_over_cryptobeam']:.1f} ({ratio_range(r)})",
            f"{r['polars_from_parquet_s']:.2f}",
            f"{r['cryptobeam_peak_pss_mb']:,}",
            "yes" if r["agree_with_polars"] and r["agree_with_duckdb"] else "NO",
        )
    Console(width=200).print(table)
    curve = Table(
        title=f"time per trade, 1 symbol, {SWEEP_TRADES_PER_WINDOW} trades per 1m window "
        f"(start-up {sweep[0]['startup_s']:.2f} s subtracted for 'net')"
    )
    for column in (
        "windows",
        "trades",
        "cryptobeam s",
        "µs/trade",
        "net µs/trade",
        "net CPU µs/trade",
        "peak PSS MB",
        "agree",
    ):
        curve.add_column(column, justify="right")
    for r in sweep:
        curve.add_row(
            f"{r['windows']:,}",
            f"{r['trades']:,}",
            f"{r['cryptobeam_s']:.2f}",
            f"{r['cryptobeam_us_per_trade']:.2f}",
            f"{r['net_us_per_trade']:.2f}",
            f"{r['net_cpu_us_per_trade']:.2f}",
            f"{r['cryptobeam_peak_pss_mb']:,}",
            "yes" if r["agree_with_polars"] and r["agree_with_duckdb"] else "NO",
        )
    Console(width=200).print(curve)
    size = [r for r in runs if r["days"] == 1.0]

    def spread(rows, key):
        return max(r[key] for r in rows) / min(r[key] for r in rows)

    print(
        f"spread of net time per trade (target: within 1.5x): "
        f"1M -> 10M wall {spread(size, 'net_us_per_trade'):.2f}x, "
        f"CPU {spread(size, 'net_cpu_us_per_trade'):.2f}x; "
        f"1k -> 43.2k windows wall {spread(sweep, 'net_us_per_trade'):.2f}x, "
        f"CPU {spread(sweep, 'net_cpu_us_per_trade'):.2f}x; "
        f"all agree: {all(r['agree_with_polars'] and r['agree_with_duckdb'] for r in runs + sweep)}"
    )


def run_suite(repeat: int) -> None:
    startup = run_once(1_000, ["BTCUSDT"], 1.0, "parquet", repeat)
    runs = []
    for label, trades, n_symbols, days, input_format in SUITE:
        runs.append(
            with_net(
                {**run_once(trades, SYMBOLS[:n_symbols], days, input_format, repeat), "days": days}, startup, label
            )
        )
        print(f"done: {label}", file=sys.stderr)
    sweep = []
    for windows in SWEEP_WINDOWS:
        result = run_once(windows * SWEEP_TRADES_PER_WINDOW, SYMBOLS[:1], windows / 1440, "parquet", repeat)
        sweep.append(with_net({**result, "days": windows / 1440}, startup, f"{windows} windows"))
        print(f"done: sweep {windows} windows", file=sys.stderr)
    print_suite(runs, sweep)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "backfill-suite.json").write_text(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{platform.platform()}, {os.cpu_count()} cores",
                "startup": startup,
                "runs": runs,
                "windows_sweep": sweep,
            },
            indent=2,
        )
    )
    print(f"written {out_dir / 'backfill-suite.json'}")


# ------------------------------------------------------------- consolidated bars (issue 24)

CONSOLIDATED_INTERVAL_US = 60_000_000
CONSOLIDATED_PARTITIONS = 12
QUOTE_EQUIVALENT = ("USDT", "USD")
CONSOLIDATION_TARGET_PCT = 50
"""Consolidated bars may add at most this much to the run time of time bars alone (issue 24)."""
VENUE_PAIRS = {
    ("binance", "BTCUSDT"): ("BTC", "USDT"),
    ("coinbase", "BTC-USD"): ("BTC", "USD"),
    ("kraken", "XBTUSD"): ("BTC", "USD"),
}
"""The synthetic venues' pairs as the exchanges list them, written here rather than read from the
shipped table, so the reference does not share cryptobeam's lookup."""
TIME_ONLY, ONE_CHUNK, WITH_CONSOLIDATED = "time_only", "time_only_one_chunk", "with_consolidated"
CONSOLIDATED_RUNS = {  # name -> the options after --input and --out
    TIME_ONLY: ["--bars", "time:1m"],
    # Consolidation needs a day's trades of every venue in one chunk, so its run cannot cut the
    # day into pieces for two workers: this control has the same shape without consolidating.
    ONE_CHUNK: ["--bars", "time:1m", "--chunk-rows", "0", "--workers", "1"],
    WITH_CONSOLIDATED: [
        "--bars",
        "time:1m",
        "--bars",
        "consolidated:1m",
        "--quote-equivalent",
        "=".join(QUOTE_EQUIVALENT),
    ],
}


def polars_consolidated(pattern: str) -> tuple[dict, int]:
    """Consolidated prices by (pair, window start µs), from the method's text: in each partition of
    each window the pooled trades ordered by price, the first price at which the running volume
    reaches half the partition's; the window's price the mean of its non-empty partitions' medians.
    Returns them and how many partitions the float running sum left in doubt (settled exactly)."""
    width = CONSOLIDATED_INTERVAL_US // CONSOLIDATED_PARTITIONS
    quote_as = dict([QUOTE_EQUIVALENT])
    pairs = pl.DataFrame(
        [{"exchange": e, "symbol": s, "pair": f"{b}/{quote_as.get(q, q)}"} for (e, s), (b, q) in VENUE_PAIRS.items()]
    )
    group = ["pair", "window", "part"]
    trades = (
        pl.scan_parquet(pattern)
        .select("exchange", "symbol", pl.col("event_time").cast(pl.Int64).alias("t"), "price", "amount")
        .filter(pl.col("amount") > 0)
        .join(pairs.lazy(), on=["exchange", "symbol"], how="inner")
        .select(
            "pair",
            "price",
            "amount",
            window=pl.col("t") // CONSOLIDATED_INTERVAL_US * CONSOLIDATED_INTERVAL_US,
            part=pl.col("t") % CONSOLIDATED_INTERVAL_US // width,
        )
    )
    running = (
        trades.sort([*group, "price"])
        .with_columns(through=pl.col("amount").cum_sum().over(group))
        .with_columns(before=pl.col("through") - pl.col("amount"), total=pl.col("through").last().over(group))
    )
    # The float running sum is monotone, so exactly one row per partition crosses half; a crossing
    # within far more than the sum's rounding of half is re-checked with exact fractions.
    tolerance = 1e-9 * pl.col("total")
    medians = (
        running.filter((2 * pl.col("through") >= pl.col("total")) & (2 * pl.col("before") < pl.col("total")))
        .select(
            *group,
            "price",
            doubt=((2 * pl.col("through") - pl.col("total")) <= tolerance)
            | ((pl.col("total") - 2 * pl.col("before")) <= tolerance),
        )
        .collect()
    )
    doubtful = medians.filter(pl.col("doubt")).select(group)
    settled = {}
    if doubtful.height:
        rows = trades.join(doubtful.lazy(), on=group, how="semi").collect()
        for key, part in rows.group_by(group):
            settled[tuple(key)] = _exact_weighted_median(part["price"].to_list(), part["amount"].to_list())
    by_window: dict[tuple, list[float]] = {}
    for pair, window, part, price, _ in medians.sort(group).iter_rows():
        by_window.setdefault((pair, window), []).append(settled.get((pair, window, part), price))
    return {key: (math.fsum(values) / len(values), len(values)) for key, values in by_window.items()}, doubtful.height


def _exact_weighted_median(prices: list[float], amounts: list[float]) -> float:
    ordered = sorted(zip(prices, map(Fraction, amounts)))
    total, running = sum(a for _, a in ordered), Fraction(0)
    for price, amount in ordered:
        running += amount
        if 2 * running >= total:
            return price
    raise AssertionError("a partition with no volume")


def cryptobeam_consolidated(out: str) -> pl.DataFrame:
    """The final consolidated bars of a run."""
    return (
        pl.read_parquet(f"{out}/bars_consolidated/**/*.parquet", hive_partitioning=False)
        .filter(pl.col("is_final"))
        .select(
            pl.format("{}/{}", "base", "quote").alias("pair"),
            pl.col("window_start").cast(pl.Int64).alias("window"),
            "price",
            "partitions_with_trades",
            "excluded",
            "constituent_count",
            "trade_count",
        )
    )


def consolidated_check(ours: pl.DataFrame, reference: dict, trades: int) -> dict:
    """Whether cryptobeam's final consolidated prices equal the reference's exactly, and that no
    venue was excluded (the reference does not judge venues: the synthetic day needs no exclusion)."""
    prices = {
        (pair, window): (price, used)
        for pair, window, price, used in ours.select("pair", "window", "price", "partitions_with_trades").iter_rows()
    }
    differing = [key for key in reference.keys() | prices.keys() if prices.get(key) != reference.get(key)]
    excluded = ours.filter(pl.col("excluded") != "{}").height
    return {
        "windows": ours.height,
        "price_mismatches": len(differing) + (ours.height - len(prices)),
        "windows_with_exclusions": excluded,
        "windows_short_of_venues": ours.filter(pl.col("constituent_count") != len(VENUE_PAIRS)).height,
        "trades_counted": int(ours["trade_count"].sum()),
        "trades_expected": trades,
    }


def _agreed(check: dict) -> bool:
    return (
        check["price_mismatches"] == 0
        and check["windows_with_exclusions"] == 0
        and check["windows_short_of_venues"] == 0
        and check["trades_counted"] == check["trades_expected"]
    )


def run_consolidated(per_venue: int, repeat: int) -> dict:
    """Three venues' day of one pair, timed ``repeat`` times in rounds of the polars reference and
    cryptobeam's three runs (CONSOLIDATED_RUNS); times are medians, the extra cost of consolidating
    the median of each round's own."""
    assert set(VENUE_PAIRS) == set(CONSOLIDATED_VENUES), "the reference must know every synthetic venue's pair"
    trades = per_venue * len(VENUE_PAIRS)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_venues_parquet(tmp, per_venue)
        pattern = os.path.join(tmp, "*.parquet")
        for k in range(repeat):
            (reference, doubtful), reference_s = timed(polars_consolidated, pattern)
            measured = {}
            for name, options in CONSOLIDATED_RUNS.items():
                out = os.path.join(tmp, f"{name}-{k}")
                (peak_mb, cpu_s), seconds = timed(
                    run_cryptobeam,
                    ["backfill", "--source", "parquet", "--input", pattern, "--out", out, "--no-progress", *options],
                )
                check = (
                    consolidated_check(cryptobeam_consolidated(out), reference, trades)
                    if name == WITH_CONSOLIDATED
                    else None
                )
                shutil.rmtree(out)
                measured[name] = {"s": seconds, "peak": peak_mb, "cpu": cpu_s, "check": check}
                print(f"round {k + 1}: {name} {seconds:.1f} s", file=sys.stderr)
            rounds.append({"reference_s": reference_s, "doubtful": doubtful, **measured})

    def median(name, key="s"):
        return statistics.median(r[name][key] for r in rounds)

    def extra_pct(r, base=TIME_ONLY):
        return (r[WITH_CONSOLIDATED]["s"] / r[base]["s"] - 1) * 100

    runs = {
        name: {
            "s": round(median(name), 3),
            "s_each": [round(r[name]["s"], 3) for r in rounds],
            "trades_per_s": round(trades / median(name)),
            "peak_pss_mb": round(max(r[name]["peak"] for r in rounds)),
            "cpu_s": round(median(name, "cpu"), 3),
            "options": " ".join(options),
        }
        for name, options in CONSOLIDATED_RUNS.items()
    }
    checks = [r[WITH_CONSOLIDATED]["check"] for r in rounds]
    extra = statistics.median(extra_pct(r) for r in rounds)
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "venues": [f"{e}:{s}" for e, s in VENUE_PAIRS],
        "trades_per_venue": per_venue,
        "trades": trades,
        "rounds": repeat,
        **runs,
        "extra_s": round(runs[WITH_CONSOLIDATED]["s"] - runs[TIME_ONLY]["s"], 3),
        "extra_pct": round(extra, 1),
        "extra_pct_each": [round(extra_pct(r), 1) for r in rounds],
        "extra_pct_over_one_chunk": round(statistics.median(extra_pct(r, ONE_CHUNK) for r in rounds), 1),
        "target_pct": CONSOLIDATION_TARGET_PCT,
        "within_target": extra <= CONSOLIDATION_TARGET_PCT,
        "reference": "polars",
        "reference_s": round(statistics.median(r["reference_s"] for r in rounds), 3),
        "reference_partitions_settled_exactly": rounds[0]["doubtful"],
        "agree_with_reference": all(_agreed(c) for c in checks),
        "check": checks[0],
    }


def print_consolidated(r: dict) -> None:
    print(f"{len(r['venues'])} venues x {r['trades_per_venue']:,} trades, 1 day, {r['rounds']} round(s), medians:")
    labels = {
        TIME_ONLY: "(a) time:1m",
        ONE_CHUNK: "(a1) time:1m, one chunk, 1 worker",
        WITH_CONSOLIDATED: "(b) time:1m + consolidated:1m",
    }
    for name, label in labels.items():
        run = r[name]
        print(
            f"  {label:<34} {run['s']:>8.2f} s  {run['trades_per_s']:>10,} trades/s  "
            f"peak PSS {run['peak_pss_mb']:>6,} MB  "
            f"CPU {run['cpu_s']:.1f} s  (rounds: {', '.join(f'{s:.2f}' for s in run['s_each'])})"
        )
    verdict = "within" if r["within_target"] else "OVER"
    print(
        f"  consolidation adds {r['extra_s']:.2f} s = {r['extra_pct']:.1f} % over (a) (rounds: "
        f"{', '.join(f'{p:.1f}' for p in r['extra_pct_each'])}); target at most {r['target_pct']} %: {verdict}"
    )
    print(f"  over the one-chunk control (a1): {r['extra_pct_over_one_chunk']:.1f} %")
    check = r["check"]
    print(
        f"  polars reference {r['reference_s']:.2f} s; agrees exactly: {r['agree_with_reference']} "
        f"({check['windows']} windows, {check['price_mismatches']} prices differ, "
        f"{check['windows_with_exclusions']} with exclusions, {r['reference_partitions_settled_exactly']} partitions "
        f"settled with exact fractions)"
    )


# The command's entry point ends with os._exit, which would skip ``python -m cProfile``'s writing
# of its statistics: call its main() instead.
_PROFILED_CLI = """
import cProfile, sys
from beam_pipelines.cli import main
profile = cProfile.Profile()
code = profile.runcall(main, sys.argv[2:])
profile.dump_stats(sys.argv[1])
sys.exit(code)
"""


def profile_consolidated(per_venue: int, top: int = 30) -> None:
    """cProfile of (a1) and (b) run in-process (one worker), on ``per_venue`` trades a venue: the
    functions with the most time of their own, and the most time under them. The statistics are
    kept under benchmarks/results/ for pstats or snakeviz."""
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_venues_parquet(tmp, per_venue)
        for name in (ONE_CHUNK, WITH_CONSOLIDATED):
            stats_path = str(out_dir / f"profile-consolidated-{per_venue}-{name}.prof")
            options = list(CONSOLIDATED_RUNS[name])
            options += [] if "--workers" in options else ["--workers", "1"]
            command = [
                sys.executable,
                "-c",
                _PROFILED_CLI,
                stats_path,
                "backfill",
                "--source",
                "parquet",
                "--input",
                os.path.join(tmp, "*.parquet"),
                "--out",
                os.path.join(tmp, name),
                "--no-progress",
                *options,
            ]
            started = time.perf_counter()
            finished = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if finished.returncode != 0:
                raise SystemExit(f"cryptobeam exited {finished.returncode}: {finished.stderr[-2000:]}")
            print(f"\n=== {name}: {' '.join(options)} ({seconds:.1f} s under cProfile; {stats_path})")
            stats = pstats.Stats(stats_path)
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(top)


SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"]


def consolidated_main(per_venue: int, repeat: int, profile: bool) -> None:
    if per_venue < 1:
        raise SystemExit("--per-venue must be at least 1")
    if profile:
        return profile_consolidated(per_venue)
    results = run_consolidated(per_venue, repeat)
    print_consolidated(results)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"backfill-consolidated-{per_venue}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written {path}")
    if not results["agree_with_reference"]:
        raise SystemExit("cryptobeam's consolidated bars disagree with the reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=3)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--scaling", help="comma-separated trade counts; prints the curve")
    parser.add_argument("--suite", action="store_true", help="the issue-6 set of runs (several minutes)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds per input; times are medians (default: 1, or 3 with --suite or --consolidated)",
    )
    parser.add_argument(
        "--consolidated",
        action="store_true",
        help="the issue-24 run: three venues' day of one pair, time bars with and without consolidated bars",
    )
    parser.add_argument("--per-venue", type=int, default=10_000_000, help="trades per venue with --consolidated")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="with --consolidated: cProfile the in-process runs instead of timing them",
    )
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.suite or args.consolidated else 1)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if args.suite:
        return run_suite(repeat)
    if args.consolidated:
        return consolidated_main(args.per_venue, repeat, args.profile)
    symbols = SYMBOLS[: args.symbols]
    if args.scaling:
        runs = [run_once(int(n), symbols, args.days, args.format, repeat) for n in args.scaling.split(",")]
        print(
            f"{'trades':>12} {'cryptobeam s':>13} {'µs/trade':>9} {'polars s':>9} {'ratio':>6} "
            f"{'peak PSS MB':>12} agree"
        )
        for r in runs:
            print(
                f"{r['trades']:>12,} {r['cryptobeam_s']:>13} {r['cryptobeam_us_per_trade']:>9} {r['polars_s']:>9} "
                f"{r['polars_over_cryptobeam']:>6} {r['cryptobeam_peak_pss_mb']:>12} "
                f"{r['agree_with_polars'] and r['agree_with_duckdb']}"
            )
        (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "results" / f"scaling-{args.format}.json").write_text(json.dumps(runs, indent=2))
        return
    results = run_once(args.trades, symbols, args.days, args.format, repeat)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"backfill-{args.format}-{args.trades}.json").write_text(json.dumps(results, indent=2))
    if not (results["agree_with_polars"] and results["agree_with_duckdb"]):
        raise SystemExit("results disagree")


if __name__ == "__main__":
    main()
