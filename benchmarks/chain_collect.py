"""Chain collect benchmark: blocks/s and transfers/s of ``cryptobeam collect --chain`` catching up
from a local anvil node into a local Kafka broker.

    .venv/bin/python benchmarks/chain_collect.py                          # 2,000 blocks, 20 transfers each
    .venv/bin/python benchmarks/chain_collect.py --blocks 500 --transfers-per-block 100 --repeat 1

Starts a Kafka broker (``cryptobeam kafka up``'s) and anvil (``scripts/install_anvil.sh``),
deploys a test token and mines ``--blocks`` blocks of ``--transfers-per-block`` ERC-20 transfers
each (``benchmarks/chain_anvil.py``), then, in each round, runs the command in a process
of its own, as a user runs it, from block 0 to the head (``--until-block``) into new topics. The
live path does per block what an export does per batch: it reads the block, walks its parent
hash, fetches its logs by block hash, publishes every record to Kafka and waits for the broker's
acknowledgement before checkpointing each step. Each round checks that the topics hold every
block and transfer. Printed: the median round's blocks/s and transfers/s, over the process's
wall time (start-up included) and over the collector's own elapsed time from its summary.
Results go to benchmarks/results/chain_collect.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from benchmarks.chain_anvil import chain_arguments, filled_anvil, write_results  # noqa: E402
from runners.local_kafka import LocalKafka, create_topics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "chain_collect.json"
CLI = str(Path(sys.executable).parent / "cryptobeam")


def summary_figures(output: str) -> dict[str, str]:
    """The rows of ``collect --chain``'s summary table, by label."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def messages_in(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "log_level": 3})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return high - low
    finally:
        consumer.close()


def collect(url: str, bootstrap: str, head: int, work: Path) -> dict:
    """One round: the command from block 0 to ``head`` into new topics; its times and counts."""
    run = uuid.uuid4().hex[:8]
    topics = {kind: f"{kind}_{run}" for kind in ("blocks", "token_transfers", "dead_letters")}
    create_topics(bootstrap, {name: 1 for name in topics.values()})
    started = time.perf_counter()
    done = subprocess.run(
        [
            CLI, "collect", "--chain", "ethereum", "--rpc", url, "--kafka", bootstrap,
            "--blocks-topic", topics["blocks"], "--transfers-topic", topics["token_transfers"],
            "--dead-letter-topic", topics["dead_letters"], "--from-block", "0", "--until-block", str(head),
            "--checkpoint", str(work / f"{run}.json"), "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"collect --chain failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    figures = summary_figures(done.stdout)
    number = lambda label: int(figures[label].replace(",", ""))  # noqa: E731
    return {
        "wall_seconds": wall,
        "collector_seconds": float(figures["elapsed"].removesuffix(" s").replace(",", "")),
        "blocks": number("blocks published"),
        "transfers": number("token transfers published"),
        "checkpoints": number("checkpoints written"),
        "in_topics": (messages_in(bootstrap, topics["blocks"]), messages_in(bootstrap, topics["token_transfers"])),
    }


def main() -> None:
    args = chain_arguments(__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="chain-collect-bench-") as work:
        broker = LocalKafka.start(Path(work) / "kafka")
        try:
            with filled_anvil(Path(work), args) as chain:
                rounds = [collect(chain.node.url, broker.bootstrap, chain.head, Path(work)) for _ in range(args.repeat)]
        finally:
            broker.stop()
    blocks, transfers = chain.blocks, chain.transfers
    for i, measured in enumerate(rounds):
        if (measured["blocks"], measured["transfers"]) != (blocks, transfers) or measured["in_topics"] != (
            blocks,
            transfers,
        ):
            raise RuntimeError(
                f"round {i + 1}: {measured['blocks']:,} blocks and {measured['transfers']:,} transfers published, "
                f"{measured['in_topics']} in the topics; {blocks:,} and {transfers:,} on the chain"
            )
    results = {}
    for clock in ("wall_seconds", "collector_seconds"):
        seconds = statistics.median(measured[clock] for measured in rounds)
        results[clock.removesuffix("_seconds")] = {
            "seconds": round(seconds, 3),
            "rounds": [round(measured[clock], 3) for measured in rounds],
            "blocks_per_second": round(blocks / seconds),
            "transfers_per_second": round(transfers / seconds),
        }
        what = "process wall time" if clock == "wall_seconds" else "the collector's elapsed, start-up excluded"
        print(
            f"{clock.removesuffix('_seconds'):>9}: {seconds:6.2f} s  {blocks / seconds:>9,.0f} blocks/s  "
            f"{transfers / seconds:>9,.0f} transfers/s  (median of {args.repeat}; {what})"
        )
    print(f"checkpoints written per round: {rounds[0]['checkpoints']:,}")
    write_results(
        RESULTS,
        {
            "blocks": blocks,
            "transfers": transfers,
            "transfers_per_block": args.transfers_per_block,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
