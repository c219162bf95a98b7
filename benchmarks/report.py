"""Report benchmark: ``cryptobeam report`` must not take longer than the backfill that made its data.

    .venv/bin/python benchmarks/report.py                      # a month of 1m bars of one symbol, 3 rounds
    .venv/bin/python benchmarks/report.py --trades 1000000 --symbols 3 --repeat 1

Makes a month (30 days) of synthetic trades (``benchmarks.synthetic``, the backfill suite's "1
symbol, 30 days, Parquet" input by default: 10M trades, 43,200 one-minute windows), with quiet
hours (so the bars have gaps, filled by ``--fill-gaps``) and a few re-delivered trades (so there
are duplicates), and a few malformed lines in a Binance CSV file beside it (so there are dead
letters). Then, in each round, times the backfill (``--fill-gaps``, the command in a process of
its own, as a user runs it) and the report on its output, and prints both times (medians), their
ratio and the report's size and charts. Results go to benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.backfill import SYMBOLS, run_cryptobeam, timed  # noqa: E402
from benchmarks.synthetic import DAY_MICROS, START_MICROS, synthetic_trades  # noqa: E402

DAYS = 30
QUIET_HOURS = 12
"""Hours without trades, one every few days: gaps the backfill fills."""
REDELIVERED = 1_000
"""Trades written twice: duplicates the backfill absorbs."""


def write_month(directory: str, trades: int, symbols: list[str]) -> list[str]:
    """The month's trades as one Parquet file (quiet hours cut out, some rows twice) and a Binance
    CSV file with malformed lines; returns the backfill's --input options."""
    table = synthetic_trades(trades, symbols, days=DAYS)
    times = table["event_time"].cast("int64").to_numpy()
    hour = 3_600_000_000
    quiet = np.zeros(len(times), dtype=bool)
    for k in range(QUIET_HOURS):
        start = START_MICROS + (k * DAYS * DAY_MICROS) // QUIET_HOURS + 7 * hour
        quiet |= (times >= start) & (times < start + hour)
    kept = table.filter(pc.invert(quiet))
    kept = kept.take(
        np.sort(
            np.concatenate([np.arange(kept.num_rows), np.linspace(0, kept.num_rows - 1, REDELIVERED, dtype=np.int64)])
        )
    )
    pq.write_table(kept, os.path.join(directory, "month.parquet"), compression="zstd")
    csv_dir = os.path.join(directory, "csv")
    os.makedirs(csv_dir)
    first_ms = START_MICROS // 1000
    with open(os.path.join(csv_dir, f"{symbols[0]}-aggTrades-2024-01-01.csv"), "w") as handle:
        handle.write(f"1,100.0,1,1,1,{first_ms},True,True\n2,oops,1,2,2,{first_ms + 10},True,True\n3,,,\n")
    return ["--input", f"parquet:{directory}/month.parquet", "--input", f"binance-aggtrades:{csv_dir}/*.csv"]


def run_report(out: str) -> tuple[str, float]:
    started = time.perf_counter()
    finished = subprocess.run(
        [str(Path(sys.executable).parent / "cryptobeam"), "report", out, "--no-progress"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"cryptobeam report exited {finished.returncode}: {finished.stderr[-2000:]}")
    return finished.stdout.strip(), seconds


def bars_written(out: str) -> tuple[int, int]:
    summary = json.loads(Path(out, "_SUMMARY.json").read_text())
    if not summary["reconciled"]:
        raise SystemExit(f"the backfill did not reconcile: {summary['problems']}")
    return summary["bar_rows_written"], summary["filled_bars_written"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; times are medians")
    args = parser.parse_args()
    if args.repeat < 1 or args.trades < 1 or not 1 <= args.symbols <= len(SYMBOLS):
        raise SystemExit(f"--repeat and --trades must be at least 1, --symbols 1 to {len(SYMBOLS)}")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_month(tmp, args.trades, SYMBOLS[: args.symbols])
        for k in range(args.repeat):
            out = os.path.join(tmp, f"out-{k}")
            (peak_mb, _cpu), backfill_s = timed(
                run_cryptobeam, ["backfill", *inputs, "--interval", "1m", "--fill-gaps", "--out", out, "--no-progress"]
            )
            bars, filled = bars_written(out)
            line, report_s = run_report(out)
            size = os.path.getsize(os.path.join(out, "report.html"))
            rounds.append(
                {
                    "backfill_s": backfill_s,
                    "report_s": report_s,
                    "bars": bars,
                    "filled": filled,
                    "report_bytes": size,
                    "report_line": line,
                    "backfill_peak_pss_mb": peak_mb,
                }
            )
            print(f"round {k + 1}: backfill {backfill_s:.2f} s, report {report_s:.2f} s", file=sys.stderr)
            shutil.rmtree(out)
    backfill_s = statistics.median(r["backfill_s"] for r in rounds)
    report_s = statistics.median(r["report_s"] for r in rounds)
    charts = re.search(r"(\d+) chart", rounds[0]["report_line"])
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "trades": args.trades,
        "symbols": args.symbols,
        "days": DAYS,
        "rounds": args.repeat,
        "bars": rounds[0]["bars"],
        "filled_bars": rounds[0]["filled"],
        "backfill_s": round(backfill_s, 3),
        "backfill_s_each": [round(r["backfill_s"], 3) for r in rounds],
        "report_s": round(report_s, 3),
        "report_s_each": [round(r["report_s"], 3) for r in rounds],
        "report_over_backfill": round(report_s / backfill_s, 3),
        "within_target": report_s <= backfill_s,
        "report_bytes": rounds[0]["report_bytes"],
        "charts": int(charts.group(1)) if charts else None,
        "report_line": rounds[0]["report_line"],
    }
    print(
        f"{args.symbols} symbol(s) x {DAYS} days of 1m bars: "
        f"{results['bars']:,} bars ({results['filled_bars']:,} filled) "
        f"from {args.trades:,} trades, {args.repeat} round(s), medians:"
    )
    print(
        f"  backfill (--fill-gaps)  {backfill_s:6.2f} s  "
        f"(rounds: {', '.join(f'{s:.2f}' for s in results['backfill_s_each'])})"
    )
    print(
        f"  report                  {report_s:6.2f} s  "
        f"(rounds: {', '.join(f'{s:.2f}' for s in results['report_s_each'])})"
    )
    print(
        f"  report / backfill = {results['report_over_backfill']:.2f}: "
        f"{'within' if results['within_target'] else 'OVER'} the target (the report takes no longer than the backfill)"
    )
    print(f"  {results['report_line']}")
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(results, indent=2))
    print(f"written {out_dir / 'report.json'}")
    if not results["within_target"]:
        raise SystemExit("the report took longer than the backfill")


if __name__ == "__main__":
    main()
