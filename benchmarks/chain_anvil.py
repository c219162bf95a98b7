"""What the chain benchmarks (``chain_export.py``, ``chain_collect.py``) share: their options for the
chain they mine, an anvil node filled with ERC-20 transfers, and their results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.anvil import Anvil, call_data, running_anvil  # noqa: E402

TRANSFER_GAS = hex(100_000)
"""Gas given to each transfer, so anvil does not estimate it for every one (a transfer needs about 52,000)."""


def chain_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the chain's options (--blocks, --transfers-per-block, --seed) and --repeat."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--blocks", type=int, default=2_000, help="blocks of transfers to mine (default 2,000)")
    parser.add_argument("--transfers-per-block", type=int, default=20, help="ERC-20 transfers per block (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def fill_chain(node: Anvil, blocks: int, per_block: int, seed: int) -> int:
    """Deploy a test token and mine ``blocks`` blocks of ``per_block`` transfers each (values up to
    2**100, to anvil's accounts); returns the transfers made."""
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


@dataclass
class FilledChain:
    node: Anvil
    head: int
    transfers: int
    """Every ERC-20 transfer on the chain: those mined and the token's mint."""

    @property
    def blocks(self) -> int:
        return self.head + 1


@contextmanager
def filled_anvil(work: Path, args: argparse.Namespace) -> Iterator[FilledChain]:
    """A running anvil filled as the options say (``chain_arguments``), stopped after."""
    with running_anvil(work / "anvil") as node:
        filling = time.perf_counter()
        made = fill_chain(node, args.blocks, args.transfers_per_block, args.seed)
        head = node.block_number()
        print(f"anvil: {head + 1:,} blocks, {made:,} transfers mined in {time.perf_counter() - filling:,.1f} s")
        yield FilledChain(node, head, made + 1)


def write_results(path: Path, figures: dict) -> None:
    """The figures, with the machine they were measured on, as the benchmark's results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    path.write_text(json.dumps({**figures, "machine": machine}, indent=2))
    print(f"results: {path}")
