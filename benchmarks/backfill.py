"""Backfill benchmark: cryptobeam on the local runner against polars and duckdb, same input, same bars.

    .venv/bin/python benchmarks/backfill.py [--trades 1000000] [--symbols 3] [--days 1] [--format parquet|csv]
    .venv/bin/python benchmarks/backfill.py --scaling 1000000,3000000,10000000     # time per trade vs size

Generates N synthetic trades (Parquet, or Binance aggTrades CSV files per symbol and day),
computes 1-minute bars three ways, checks that they agree, and prints trades/s, ratios and
cryptobeam's peak RSS, measured in its own process (also written as JSON under
benchmarks/results/). ``--scaling`` repeats the run for each size and prints µs per trade, which
should stay flat. polars and duckdb always read the Parquet copy, so with ``--format csv`` the
ratio also charges cryptobeam for parsing CSV.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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


def polars_bars(path: str, interval_us: int) -> pl.DataFrame:
    frame = pl.read_parquet(path)
    t = pl.col("event_time").cast(pl.Int64)
    return (frame.with_columns(window_start=(t // interval_us) * interval_us, t=t,
                               id_len=pl.col("trade_id").str.len_chars())
            .sort(["symbol", "t", "id_len", "trade_id"])
            .group_by(["exchange", "symbol", "window_start"], maintain_order=True)
            .agg(open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
                 close=pl.col("price").last(), volume=pl.col("amount").sum(),
                 quote_volume=(pl.col("price") * pl.col("amount")).sum(), trade_count=pl.len()))


def duckdb_bars(path: str, interval_us: int):
    return duckdb.sql(f"""
        WITH t AS (SELECT *, epoch_us(event_time) AS us FROM read_parquet('{path}'))
        SELECT exchange, symbol, (us // {interval_us}) * {interval_us} AS window_start,
               arg_min(price, (us, length(trade_id), trade_id)) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, (us, length(trade_id), trade_id)) AS close, sum(amount) AS volume,
               sum(price * amount) AS quote_volume, count(*) AS trade_count
        FROM t GROUP BY ALL ORDER BY exchange, symbol, window_start""").pl()


def cryptobeam_bars(inputs: str, source: str, out: str) -> tuple[pl.DataFrame, float]:
    """Bars from the CLI in a process of its own; returns them and that process's peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run([str(Path(sys.executable).parent / "cryptobeam"), "backfill", "--source", source, "--input",
                             inputs, "--interval", "1m", "--out", out, "--no-progress"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cryptobeam exited {result.returncode}: {result.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    bars = pl.read_parquet(f"{out}/bars/**/*.parquet", hive_partitioning=True).filter(~pl.col("is_filled"))
    return bars, max(peak, before) / 1024


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


def run_once(trades: int, symbols: list[str], days: float, input_format: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trades.parquet")
        write_synthetic_parquet(path, trades, symbols, days)
        interval_us = 60_000_000
        polars_result, polars_s = timed(polars_bars, path, interval_us)
        duck_result, duck_s = timed(duckdb_bars, path, interval_us)
        inputs, source = (write_binance_csv(path, tmp), "binance-aggtrades") if input_format == "csv" else (path, "parquet")
        (ours, peak_rss_mb), ours_s = timed(cryptobeam_bars, inputs, source, os.path.join(tmp, "out"))
    args = argparse.Namespace(trades=trades, symbols=len(symbols))
    return {
        "date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "format": input_format, "trades": args.trades, "symbols": args.symbols, "windows": ours.height,
        "cryptobeam_s": round(ours_s, 3), "polars_s": round(polars_s, 3), "duckdb_s": round(duck_s, 3),
        "cryptobeam_trades_per_s": round(args.trades / ours_s), "polars_trades_per_s": round(args.trades / polars_s),
        "duckdb_trades_per_s": round(args.trades / duck_s),
        "polars_over_cryptobeam": round(ours_s / polars_s, 2), "duckdb_over_cryptobeam": round(ours_s / duck_s, 2),
        "agree_with_polars": agree(polars_result, ours), "agree_with_duckdb": agree(duck_result, ours),
        "cryptobeam_peak_rss_mb": round(peak_rss_mb),
        "cryptobeam_us_per_trade": round(ours_s / args.trades * 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=3)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--scaling", help="comma-separated trade counts; prints the curve")
    args = parser.parse_args()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"][: args.symbols]
    if args.scaling:
        runs = [run_once(int(n), symbols, args.days, args.format) for n in args.scaling.split(",")]
        print(f"{'trades':>12} {'cryptobeam s':>13} {'µs/trade':>9} {'polars s':>9} {'ratio':>6} {'peak RSS MB':>12} agree")
        for r in runs:
            print(f"{r['trades']:>12,} {r['cryptobeam_s']:>13} {r['cryptobeam_us_per_trade']:>9} {r['polars_s']:>9} "
                  f"{r['polars_over_cryptobeam']:>6} {r['cryptobeam_peak_rss_mb']:>12} {r['agree_with_polars'] and r['agree_with_duckdb']}")
        (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "results" / f"scaling-{args.format}.json").write_text(json.dumps(runs, indent=2))
        return
    results = run_once(args.trades, symbols, args.days, args.format)
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
