"""Kill a backfill at random moments, resume it, and compare with an uninterrupted run.

    .venv/bin/python benchmarks/kill_resume.py --rounds 10 [--input 'data/XRPETH-aggTrades-*.zip']

Each round starts the backfill, sends SIGKILL to the command after a random delay (up to twice
over, so a resumed run is killed too), then runs it to completion. The round passes when the
final bars equal those of a clean run, ``validate`` finds nothing and every record is accounted
for. Prints one line per round and a summary; exits 1 if any round lost or changed anything.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from io_connectors.bar_reader import final_bars  # noqa: E402

CLI = str(Path(sys.executable).parent / "cryptobeam")


def backfill_command(inputs: str, out: Path, source: str) -> list[str]:
    return [
        CLI,
        "backfill",
        "--source",
        source,
        "--input",
        inputs,
        "--chunk",
        "1d",
        "--interval",
        "1m",
        "--fill-gaps",
        "--out",
        str(out),
        "--no-progress",
    ]


def killed_after(command: list[str], seconds: float) -> bool:
    """Run ``command`` and SIGKILL its whole process group after ``seconds``; True if it was killed."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def comparable(bars: list[dict]) -> list[tuple]:
    return [tuple(sorted((k, v) for k, v in bar.items() if k != "file")) for bar in bars]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--input", default="data/XRPETH-aggTrades-*.zip")
    parser.add_argument("--source", default="binance-aggtrades")
    parser.add_argument("--max-delay", type=float, default=3.0, help="longest wait before a kill, seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    clean = work / "clean"
    subprocess.run(backfill_command(args.input, clean, args.source), cwd=ROOT, check=True, capture_output=True)
    expected = comparable(final_bars(str(clean)))
    records = json.loads((clean / "_SUMMARY.json").read_text())["records_in"]
    kills = failures = 0
    for round_number in range(1, args.rounds + 1):
        out = work / f"round{round_number}"
        delays = [round(random.uniform(0.3, args.max_delay), 2) for _ in range(random.randint(1, 2))]
        killed_at = [delay for delay in delays if killed_after(backfill_command(args.input, out, args.source), delay)]
        kills += len(killed_at)
        started = time.monotonic()
        finish = subprocess.run(
            backfill_command(args.input, out, args.source), cwd=ROOT, capture_output=True, text=True
        )
        summary = json.loads((out / "_SUMMARY.json").read_text()) if (out / "_SUMMARY.json").exists() else {}
        valid = subprocess.run([CLI, "validate", str(out)], cwd=ROOT, capture_output=True, text=True).returncode == 0
        same = comparable(final_bars(str(out))) == expected
        lost = records - summary.get("records_in", 0)
        ok = finish.returncode == 0 and valid and same and lost == 0 and summary.get("reconciled")
        failures += not ok
        print(
            f"round {round_number}: killed after {killed_at} s, resume exit {finish.returncode} in "
            f"{time.monotonic() - started:.1f} s, chunks skipped {summary.get('chunks_skipped')}, "
            f"bars equal {same}, validate {'ok' if valid else 'FAILED'}, records lost {lost}",
            flush=True,
        )
    print(f"{args.rounds} rounds, {kills} SIGKILLs, {failures} failed; {records:,} records per run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
