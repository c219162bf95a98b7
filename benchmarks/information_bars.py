"""Information bars benchmark: what tick, volume and dollar bars add to a backfill, and whether
its tick bars agree with polars.

    .venv/bin/python benchmarks/information_bars.py [--trades 10000000] [--symbols 1] [--days 30] [--repeat 2]

Generates the synthetic Parquet input of ``benchmarks/backfill.py`` and times ``cryptobeam
backfill`` three ways, in rounds: time bars alone (``--bars time:1m``), time bars with the three
kinds of information bars beside them, and the information bars alone. polars cuts the same
tick bars (trades per symbol and UTC day in (time, id) order, every N-th one closing a bar) as
the reference. Prints one JSON object, also written under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from benchmarks.synthetic import write_synthetic_parquet  # noqa: E402

TICKS = 1000
INFORMATION = ("--bars", f"ticks:{TICKS}", "--bars", "volume:5000", "--bars", "dollar:500000")
RUNS = {
    "time bars": ("--bars", "time:1m"),
    "time + information bars": ("--bars", "time:1m", *INFORMATION),
    "information bars": INFORMATION,
}


def cryptobeam(path: str, out: str, bars: tuple) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cryptobeam"),
            "backfill",
            "--source",
            "parquet",
            "--input",
            path,
            "--out",
            out,
            "--no-progress",
            *bars,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"cryptobeam exited {result.returncode}: {result.stderr[-2000:]}")
    return time.perf_counter() - start


def polars_tick_bars(path: str) -> pl.DataFrame:
    """(symbol, day, ordinal, trade count, first id, last id) of tick bars of ``TICKS`` trades."""
    return (
        pl.scan_parquet(path)
        .with_columns(day=pl.col("event_time").dt.date(), id_length=pl.col("trade_id").str.len_bytes())
        .sort(["symbol", "day", "event_time", "id_length", "trade_id"])
        .with_columns(ordinal=(pl.int_range(pl.len()).over(["symbol", "day"]) // TICKS))
        .group_by(["symbol", "day", "ordinal"], maintain_order=True)
        .agg(trade_count=pl.len(), first_trade_id=pl.col("trade_id").first(), last_trade_id=pl.col("trade_id").last())
        .collect()
    )


def ours_tick_bars(out: str) -> pl.DataFrame:
    bars = pl.read_parquet(f"{out}/bars_ticks/**/*.parquet", hive_partitioning=True).filter(pl.col("is_final"))
    return bars.with_columns(
        pl.col("day").str.to_date(), pl.col("ordinal").cast(pl.Int64), pl.col("symbol").cast(pl.String)
    ).select("symbol", "day", "ordinal", pl.col("trade_count").cast(pl.UInt32), "first_trade_id", "last_trade_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"][: args.symbols]
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trades.parquet")
        write_synthetic_parquet(path, args.trades, symbols, args.days)
        start = time.perf_counter()
        reference = polars_tick_bars(path)
        polars_s = time.perf_counter() - start
        agree = None
        for k in range(args.repeat):
            for name, bars in RUNS.items():
                out = os.path.join(tmp, f"out-{k}-{len(times[name])}-{name.replace(' ', '_')}")
                times[name].append(cryptobeam(path, out, bars))
                if name == "information bars" and agree is None:
                    agree = (
                        ours_tick_bars(out)
                        .sort(["symbol", "day", "ordinal"])
                        .equals(reference.sort(["symbol", "day", "ordinal"]))
                    )
                subprocess.run(["rm", "-rf", out], check=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "trades": args.trades,
        "symbols": len(symbols),
        "days": args.days,
        "rounds": args.repeat,
        "seconds": {name: round(value, 3) for name, value in medians.items()},
        "seconds_each": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "information_bars_add_us_per_trade": round(
            (medians["time + information bars"] - medians["time bars"]) / args.trades * 1e6, 3
        ),
        "polars_tick_bars_s": round(polars_s, 3),
        "tick_bars_agree_with_polars": agree,
    }
    print(json.dumps(result, indent=2))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"information_bars_{args.trades}_{len(symbols)}sym.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
