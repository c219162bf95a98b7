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

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.anvil import call_data, running_anvil  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "chain_export.json"
TRANSFER_GAS = hex(100_000)
"""Gas given to each transfer, so anvil does not estimate it for every one (a transfer needs about 52,000)."""


def fill_chain(node, blocks: int, per_block: int, seed: int) -> int:
    """Mine ``blocks`` blocks of ``per_block`` transfers each; returns the transfers made."""
    rng = random.Random(seed)
    token = node.deploy_token(supply=2**255)
    sender = node.accounts[0]
    node.rpc("evm_setAutomine", False)
    try:
        for _ in range(blocks):
            transfers = [
                {
                    "from": sender,
                    "to": token,
                    "gas": TRANSFER_GAS,
                    "data": call_data(
                        "TestToken", "transfer(address,uint256)", rng.choice(node.accounts[1:]), rng.randrange(2**100)
                    ),
                }
                for _ in range(per_block)
            ]
            if transfers:
                node.rpc_batch([("eth_sendTransaction", [transfer]) for transfer in transfers])
            node.mine()
    finally:
        node.rpc("evm_setAutomine", True)
    return blocks * per_block


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2_000, help="blocks of transfers to mine (default 2,000)")
    parser.add_argument("--transfers-per-block", type=int, default=20, help="ERC-20 transfers per block (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chain-export-bench-") as work, running_anvil(Path(work) / "anvil") as node:
        filling = time.perf_counter()
        made = fill_chain(node, args.blocks, args.transfers_per_block, args.seed)
        head = node.block_number()
        print(f"anvil: {head + 1:,} blocks, {made:,} transfers mined in {time.perf_counter() - filling:,.1f} s")
        results = {}
        for output_format in ("csv", "json"):
            rounds = [
                export(node.url, head, Path(work) / f"out-{output_format}", output_format) for _ in range(args.repeat)
            ]
            seconds = statistics.median(rounds)
            out = Path(work) / f"out-{output_format}" / "token_transfers" / f"token_transfers_0_{head}.{output_format}"
            with open(out, newline="") as handle:
                written = sum(1 for _ in csv.reader(handle)) - 1 if output_format == "csv" else sum(1 for _ in handle)
            transfers = made + 1  # and the token's mint
            if written != transfers:
                raise RuntimeError(f"{output_format}: {written:,} transfers written, {transfers:,} made")
            results[output_format] = {
                "seconds": round(seconds, 3),
                "rounds": [round(s, 3) for s in rounds],
                "blocks_per_second": round((head + 1) / seconds),
                "transfers_per_second": round(transfers / seconds),
            }
            print(
                f"{output_format:>4}: {seconds:6.2f} s  {(head + 1) / seconds:>9,.0f} blocks/s  "
                f"{transfers / seconds:>9,.0f} transfers/s  (median of {args.repeat}; process wall time)"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "blocks": head + 1,
                "transfers": made + 1,
                "batch_blocks": 100,
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
