"""Backfill benchmark: cryptobeam on the local runner against polars and duckdb, same input, same bars.

    .venv/bin/python benchmarks/backfill.py --suite          # the issue-6 set, 3 rounds each: prints tables, writes JSON
    .venv/bin/python benchmarks/backfill.py [--trades 1000000] [--symbols 3] [--days 1] [--format parquet|csv]
    .venv/bin/python benchmarks/backfill.py --scaling 1000000,3000000,10000000     # time per trade vs size

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

``--repeat N`` times each input in N rounds of polars, duckdb and cryptobeam (3 with ``--suite``).
Times are medians, and the ratio is the median of each round's own ratio: on a shared 2-core VM
single runs of the same command vary by 10-20%.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import threading
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks.synthetic import write_synthetic_parquet  # noqa: E402


def _polars_bars_of(trades, interval_us: int, ties: list[str]) -> pl.DataFrame:
    """1-minute bars of trades with exchange, symbol, t (µs), price and amount; ``ties`` orders
    trades of one microsecond (open and close are the first and last)."""
    bars = (trades.with_columns(window_start=(pl.col("t") // interval_us) * interval_us)
            .sort(["symbol", "t", *ties])
            .group_by(["exchange", "symbol", "window_start"], maintain_order=True)
            .agg(open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
                 close=pl.col("price").last(), volume=pl.col("amount").sum(),
                 quote_volume=(pl.col("price") * pl.col("amount")).sum(), trade_count=pl.len()))
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
    return _polars_bars_of(frame.with_columns(t=pl.col("event_time").cast(pl.Int64),
                                              id_len=pl.col("trade_id").str.len_chars()),
                           interval_us, ["id_len", "trade_id"])


def duckdb_bars(path: str, interval_us: int):
    return _duckdb_bars_of(f"SELECT *, epoch_us(event_time) AS us FROM read_parquet('{path}')", interval_us,
                           "length(trade_id), trade_id")


# Binance aggTrades CSV columns, and the symbol in a file's name, for the references reading it.
AGG_TRADES_COLUMNS = {"trade_id": "BIGINT", "price": "DOUBLE", "amount": "DOUBLE", "first_trade_id": "BIGINT",
                      "last_trade_id": "BIGINT", "ms": "BIGINT", "is_buyer_maker": "BOOLEAN", "is_best_match": "BOOLEAN"}
SYMBOL_IN_NAME = r"([A-Z0-9]+)-aggTrades-[^/]*$"


def polars_bars_csv(pattern: str, interval_us: int) -> pl.DataFrame:
    """The same bars from Binance aggTrades CSV files, as a polars user would read them."""
    types = {"BIGINT": pl.Int64, "DOUBLE": pl.Float64, "BOOLEAN": pl.Boolean}
    frame = pl.scan_csv(pattern, has_header=False, schema={k: types[v] for k, v in AGG_TRADES_COLUMNS.items()},
                        include_file_paths="path")
    return _polars_bars_of(frame.with_columns(exchange=pl.lit("binance"), t=pl.col("ms") * 1000,
                                              symbol=pl.col("path").str.extract(SYMBOL_IN_NAME)),
                           interval_us, ["trade_id"])


def duckdb_bars_csv(pattern: str, interval_us: int):
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in AGG_TRADES_COLUMNS.items())
    return _duckdb_bars_of(
        f"""SELECT *, 'binance' AS exchange, ms * 1000 AS us, regexp_extract(filename, '{SYMBOL_IN_NAME}', 1) AS symbol
            FROM read_csv('{pattern}', header = false, columns = {{{columns}}}, filename = true)""",
        interval_us, "trade_id")


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def tree_sample(root: int, with_memory: bool = True) -> tuple[float, dict[int, float]]:
    """(summed PSS in MB, CPU seconds so far per process) of a process and all its descendants.
    PSS costs up to 50 ms a sample on large processes (the kernel walks their page tables), so
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
    with its fork server and chunk workers, and the CPU seconds they all used (user + system).

    The workers are the fork server's children, which the CLI never waits for, so their CPU is
    sampled from /proc every 0.25 s (a worker's last 0.25 s can be missed); the CLI's own comes
    from the kernel when it exits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen([str(Path(sys.executable).parent / "cryptobeam"), "backfill", "--source", source,
                                "--input", inputs, "--interval", "1m", "--out", out, "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    bars = pl.read_parquet(f"{out}/bars/**/*.parquet", hive_partitioning=True).filter(~pl.col("is_filled"))
    return bars, peak["mb"], cpu_s


def write_binance_csv(trades_path: str, directory: str) -> str:
    """The same trades as Binance aggTrades CSV files, one per symbol and day, as Binance publishes them."""
    frame = pl.read_parquet(trades_path).with_columns(ms=pl.col("event_time").cast(pl.Int64) // 1000,
                                                      day=pl.col("event_time").dt.date())
    for (symbol, day), part in frame.group_by(["symbol", "day"]):
        part.select(pl.col("trade_id"), pl.col("price"), pl.col("amount"), pl.col("trade_id").alias("first"),
                    pl.col("trade_id").alias("last"), pl.col("ms"), (pl.col("side") == "sell").alias("maker"),
                    pl.lit(True).alias("best")).write_csv(os.path.join(directory, f"{symbol}-aggTrades-{day}.csv"),
                                                          include_header=False)
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
        inputs, source = (write_binance_csv(path, tmp), "binance-aggtrades") if input_format == "csv" else (path, "parquet")
        # The references read the same input as cryptobeam; for CSV, polars from Parquet is kept too.
        polars_of, duckdb_of = (polars_bars_csv, duckdb_bars_csv) if input_format == "csv" else (polars_bars, duckdb_bars)
        for k in range(repeat):
            polars_result, polars_s = timed(polars_of, inputs, interval_us)
            duck_result, duck_s = timed(duckdb_of, inputs, interval_us)
            polars_parquet_s = timed(polars_bars, path, interval_us)[1] if input_format == "csv" else polars_s
            out = os.path.join(tmp, f"out{k}")
            (ours, peak_pss_mb, cpu_s), ours_s = timed(cryptobeam_bars, inputs, source, out)
            shutil.rmtree(out)
            rounds.append({"ours_s": ours_s, "polars_s": polars_s, "duck_s": duck_s, "peak": peak_pss_mb, "cpu": cpu_s,
                           "ratio": ours_s / polars_s, "windows": ours.height, "polars_parquet_s": polars_parquet_s,
                           "agree_polars": agree(polars_result, ours), "agree_duckdb": agree(duck_result, ours)})

    def median(key):
        return statistics.median(r[key] for r in rounds)
    ours_s, polars_s, duck_s = median("ours_s"), median("polars_s"), median("duck_s")
    return {
        "date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "format": input_format, "trades": trades, "symbols": len(symbols), "windows": rounds[0]["windows"],
        "rounds": repeat,
        "cryptobeam_s": round(ours_s, 3), "polars_s": round(polars_s, 3), "duckdb_s": round(duck_s, 3),
        "cryptobeam_s_each": [round(r["ours_s"], 3) for r in rounds],
        "cryptobeam_trades_per_s": round(trades / ours_s), "polars_trades_per_s": round(trades / polars_s),
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
    return {"label": label, **result, "startup_s": round(startup["cryptobeam_s"], 3), "net_s": round(net, 3),
            "net_us_per_trade": round(net / result["trades"] * 1e6, 3),
            "net_cpu_us_per_trade": round(net_cpu / result["trades"] * 1e6, 3),
            "throughput_vs_polars": round(1 / result["polars_over_cryptobeam"], 3)}


def ratio_range(result: dict) -> str:
    """The rounds' own polars/cryptobeam ratios, lowest to highest."""
    each = result["polars_over_cryptobeam_each"]
    return f"{min(each):.1f}-{max(each):.1f}"


def print_suite(runs: list[dict], sweep: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"cryptobeam backfill vs polars and duckdb, 1m bars, {date.today()}, {platform.machine()} "
                        f"{os.cpu_count()} cores")
    for column in ("input", "trades", "windows", "cryptobeam s", "trades/s", "net CPU µs/trade", "polars s", "duckdb s",
                   "vs polars (rounds)", "polars from Parquet s", "peak PSS MB", "agree"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(r["label"], f"{r['trades']:,}", f"{r['windows']:,}", f"{r['cryptobeam_s']:.2f}",
                      f"{r['cryptobeam_trades_per_s']:,}", f"{r['net_cpu_us_per_trade']:.2f}", f"{r['polars_s']:.2f}",
                      f"{r['duckdb_s']:.2f}",
                      f"1/{r['polars_over_cryptobeam']:.1f} ({ratio_range(r)})", f"{r['polars_from_parquet_s']:.2f}",
                      f"{r['cryptobeam_peak_pss_mb']:,}",
                      "yes" if r["agree_with_polars"] and r["agree_with_duckdb"] else "NO")
    Console(width=200).print(table)
    curve = Table(title=f"time per trade, 1 symbol, {SWEEP_TRADES_PER_WINDOW} trades per 1m window "
                        f"(start-up {sweep[0]['startup_s']:.2f} s subtracted for 'net')")
    for column in ("windows", "trades", "cryptobeam s", "µs/trade", "net µs/trade", "net CPU µs/trade", "peak PSS MB",
                   "agree"):
        curve.add_column(column, justify="right")
    for r in sweep:
        curve.add_row(f"{r['windows']:,}", f"{r['trades']:,}", f"{r['cryptobeam_s']:.2f}", f"{r['cryptobeam_us_per_trade']:.2f}",
                      f"{r['net_us_per_trade']:.2f}", f"{r['net_cpu_us_per_trade']:.2f}", f"{r['cryptobeam_peak_pss_mb']:,}",
                      "yes" if r["agree_with_polars"] and r["agree_with_duckdb"] else "NO")
    Console(width=200).print(curve)
    size = [r for r in runs if r["days"] == 1.0]

    def spread(rows, key):
        return max(r[key] for r in rows) / min(r[key] for r in rows)
    print(f"spread of net time per trade (target: within 1.5x): 1M -> 10M wall {spread(size, 'net_us_per_trade'):.2f}x, "
          f"CPU {spread(size, 'net_cpu_us_per_trade'):.2f}x; 1k -> 43.2k windows wall {spread(sweep, 'net_us_per_trade'):.2f}x, "
          f"CPU {spread(sweep, 'net_cpu_us_per_trade'):.2f}x; "
          f"all agree: {all(r['agree_with_polars'] and r['agree_with_duckdb'] for r in runs + sweep)}")


def run_suite(repeat: int) -> None:
    startup = run_once(1_000, ["BTCUSDT"], 1.0, "parquet", repeat)
    runs = []
    for label, trades, n_symbols, days, input_format in SUITE:
        runs.append(with_net({**run_once(trades, SYMBOLS[:n_symbols], days, input_format, repeat), "days": days},
                             startup, label))
        print(f"done: {label}", file=sys.stderr)
    sweep = []
    for windows in SWEEP_WINDOWS:
        result = run_once(windows * SWEEP_TRADES_PER_WINDOW, SYMBOLS[:1], windows / 1440, "parquet", repeat)
        sweep.append(with_net({**result, "days": windows / 1440}, startup, f"{windows} windows"))
        print(f"done: sweep {windows} windows", file=sys.stderr)
    print_suite(runs, sweep)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "backfill-suite.json").write_text(json.dumps({"date": date.today().isoformat(),
                                                             "machine": f"{platform.platform()}, {os.cpu_count()} cores",
                                                             "startup": startup, "runs": runs, "windows_sweep": sweep},
                                                            indent=2))
    print(f"written {out_dir / 'backfill-suite.json'}")


SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=3)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--scaling", help="comma-separated trade counts; prints the curve")
    parser.add_argument("--suite", action="store_true", help="the issue-6 set of runs (several minutes)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="rounds per input; times are medians (default: 1, or 3 with --suite)")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.suite else 1)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if args.suite:
        return run_suite(repeat)
    symbols = SYMBOLS[: args.symbols]
    if args.scaling:
        runs = [run_once(int(n), symbols, args.days, args.format, repeat) for n in args.scaling.split(",")]
        print(f"{'trades':>12} {'cryptobeam s':>13} {'µs/trade':>9} {'polars s':>9} {'ratio':>6} {'peak PSS MB':>12} agree")
        for r in runs:
            print(f"{r['trades']:>12,} {r['cryptobeam_s']:>13} {r['cryptobeam_us_per_trade']:>9} {r['polars_s']:>9} "
                  f"{r['polars_over_cryptobeam']:>6} {r['cryptobeam_peak_pss_mb']:>12} {r['agree_with_polars'] and r['agree_with_duckdb']}")
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
