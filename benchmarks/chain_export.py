"""Chain export benchmark: blocks/s and transfers/s of ``cryptobeam chain export`` from a local anvil node.

    .venv/bin/python benchmarks/chain_export.py                          # 2,000 blocks, 20 transfers each
    .venv/bin/python benchmarks/chain_export.py --blocks 500 --transfers-per-block 100 --repeat 1

Starts anvil (``scripts/install_anvil.sh``), deploys a test token and mines ``--blocks`` blocks of
``--transfers-per-block`` ERC-20 transfers each (values up to 2**100, to anvil's ten accounts),
then, in each round, exports the whole chain with the command in a process of its own, as a user
runs it, once as CSV and once as JSON lines, and prints blocks/s and transfers/s of the median
round (wall time of the process, start-up included). Results go to benchmarks/results/chain_export.json.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chain_anvil import chain_arguments, filled_anvil, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "chain_export.json"


def export(url: str, head: int, out: Path, output_format: str) -> float:
    """Seconds the command takes to export blocks 0..head."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "cryptobeam"), "chain", "export", "--rpc", url,
            "--from-block", "0", "--to-block", str(head), "--out", str(out), "--format", output_format, "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"chain export failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def main() -> None:
    args = chain_arguments(__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="chain-export-bench-") as work, filled_anvil(Path(work), args) as chain:
        results = {}
        for output_format in ("csv", "json"):
            rounds = [
                export(chain.node.url, chain.head, Path(work) / f"out-{output_format}", output_format)
                for _ in range(args.repeat)
            ]
            seconds = statistics.median(rounds)
            name = f"token_transfers_0_{chain.head}.{output_format}"
            out = Path(work) / f"out-{output_format}" / "token_transfers" / name
            with open(out, newline="") as handle:
                written = sum(1 for _ in csv.reader(handle)) - 1 if output_format == "csv" else sum(1 for _ in handle)
            if written != chain.transfers:
                raise RuntimeError(f"{output_format}: {written:,} transfers written, {chain.transfers:,} made")
            results[output_format] = {
                "seconds": round(seconds, 3),
                "rounds": [round(s, 3) for s in rounds],
                "blocks_per_second": round(chain.blocks / seconds),
                "transfers_per_second": round(chain.transfers / seconds),
            }
            print(
                f"{output_format:>4}: {seconds:6.2f} s  {chain.blocks / seconds:>9,.0f} blocks/s  "
                f"{chain.transfers / seconds:>9,.0f} transfers/s  (median of {args.repeat}; process wall time)"
            )
    write_results(
        RESULTS, {"blocks": chain.blocks, "transfers": chain.transfers, "batch_blocks": 100, "results": results}
    )


if __name__ == "__main__":
    main()
