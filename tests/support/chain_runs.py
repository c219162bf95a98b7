"""On-chain runs end to end, through the command line: an anvil chain whose blocks fall on a known
clock, ``collect --chain`` into Kafka, ``chain export`` into ethereum-etl files, a backfill of
those files and a stream of the topic, and their final on-chain tables read back.

Block times are set, not taken from the clock: the node starts at ``T0_SECONDS`` and stamps each
new block ``BLOCK_SECONDS`` after the one before (``anvil_setBlockTimestampInterval``), so block
``n`` lies at ``T0_SECONDS + n * BLOCK_SECONDS`` and three blocks fill a one-minute window.
``anvil_reorg`` gives a replacement block the time of the block it replaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

from io_connectors.bar_reader import read_bars
from io_connectors.source_formats import SOURCES
from runners.local_kafka import create_topics
from tests.support.anvil import Anvil
from tests.support.paths import CLI, ROOT

T0_SECONDS = 1_704_067_200  # 2024-01-01T00:00:00Z, the genesis block's time
BLOCK_SECONDS = 20
BLOCKS_PER_MINUTE = 60 // BLOCK_SECONDS
ANVIL_ARGS = ("--timestamp", str(T0_SECONDS))
PANE_COLUMNS = ("pane_timing", "pane_index", "is_final", "file", "date")
TABLE_KEYS = {
    "token_activity": ("token_address", "window_start"),
    "exchange_flows": ("token_address", "entity", "window_start"),
}
WIDE = {**os.environ, "COLUMNS": "200"}  # the summary tables unwrapped, one figure a line


def clock_blocks(node: Anvil) -> None:
    """Every block from now on ``BLOCK_SECONDS`` after the one before."""
    node.rpc("anvil_setBlockTimestampInterval", BLOCK_SECONDS)


def block_seconds(number: int) -> int:
    return T0_SECONDS + number * BLOCK_SECONDS


def mine_to_minute_start(node: Anvil) -> int:
    """Empty blocks until the next block opens a minute; that block's number."""
    gap = -(node.block_number() + 1) % BLOCKS_PER_MINUTE
    if gap:
        node.mine(gap)
    first = node.block_number() + 1
    assert block_seconds(first) % 60 == 0
    return first


def chain_topics() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {kind: f"{kind}_{run}" for kind in ("blocks", "token_transfers", "dead_letters")}


def create_chain_topics(bootstrap: str, topics: dict[str, str]) -> None:
    create_topics(bootstrap, {name: 1 for name in topics.values()})


def write_labels(path: Path, entities: dict[str, str]) -> Path:
    path.write_text(
        "address,label,entity\n" + "".join(f"{a},{e} wallet {i},{e}\n" for i, (a, e) in enumerate(entities.items()))
    )
    return path


def write_tokens(path: Path, tokens: dict[str, tuple[str, int, str]]) -> Path:
    """``{address: (symbol, decimals, canonical asset)}`` as a ``--tokens`` file."""
    path.write_text(
        "chain,address,symbol,decimals,canonical_asset\n"
        + "".join(f"ethereum,{a},{s},{d},{c}\n" for a, (s, d, c) in tokens.items())
    )
    return path


def collect_command(url: str, bootstrap: str, topics: dict[str, str], *options: str) -> list[str]:
    return [
        CLI, "collect", "--chain", "ethereum", "--rpc", url, "--kafka", bootstrap,
        "--blocks-topic", topics["blocks"], "--transfers-topic", topics["token_transfers"],
        "--dead-letter-topic", topics["dead_letters"], "--poll-interval", "0.05", "--no-progress", *options,
    ]  # fmt: skip


def collect(url: str, bootstrap: str, topics: dict[str, str], *options: str) -> dict[str, int]:
    """``collect --chain`` to the end of its options' range; the figures of its summary table."""
    done = subprocess.run(
        collect_command(url, bootstrap, topics, *options), capture_output=True, text=True, env=WIDE, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return summary_figures(done.stdout)


def start_collect(url: str, bootstrap: str, topics: dict[str, str], log: Path, *options: str) -> subprocess.Popen:
    """``collect --chain`` in the background, its output to ``log``."""
    with open(log, "w") as handle:
        return subprocess.Popen(
            collect_command(url, bootstrap, topics, *options), stdout=handle, stderr=subprocess.STDOUT, env=WIDE
        )


def finish_collect(process: subprocess.Popen, log: Path, timeout: float = 60) -> dict[str, int]:
    assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    return summary_figures(log.read_text())


def summary_figures(output: str) -> dict[str, int]:
    """The whole-number figures of ``collect --chain``'s summary table, by label."""
    figures = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            figures[cells[0]] = int(cells[1].replace(",", ""))
    return figures


def checkpoint_tip(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["tip"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_tip(path: Path, block: int, collector: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    """Until the running collector has checkpointed block ``block``: Kafka holds everything up to it."""
    deadline = time.monotonic() + timeout_s
    while (checkpoint_tip(path) or -1) < block:
        assert time.monotonic() < deadline and collector.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)


def export(url: str, first: int, last: int, out: Path) -> Path:
    """``chain export`` of blocks ``first`` to ``last`` into ``out``; ``out``."""
    done = subprocess.run(
        [CLI, "chain", "export", "--rpc", url, "--from-block", str(first), "--to-block", str(last),
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def backfill_chain(export_out: Path, first: int, last: int, out: Path, *options: str) -> dict:
    """A backfill of an export's token transfers (and its blocks, once backfills read them) into the
    on-chain tables; its summary."""
    inputs = [
        "--input",
        f"ethereum-etl-token-transfers:{export_out}/token_transfers/token_transfers_{first}_{last}.csv",
    ]
    if "ethereum-etl-blocks" in SOURCES:
        inputs += ["--input", f"ethereum-etl-blocks:{export_out}/blocks/blocks_{first}_{last}.csv"]
    done = subprocess.run(
        [CLI, "backfill", *inputs, "--bars", "chain:1m", "--out", str(out), "--no-progress", *options],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "_SUMMARY.json").read_text())


def panes(out: Path, table: str) -> list[dict]:
    """Every pane a run wrote to an on-chain table."""
    if not (out / table).exists():
        return []
    return read_bars(str(out), table=table).to_pylist()


def newest_panes(out: Path, table: str) -> dict[tuple, dict]:
    """The newest pane of each row of the table (its highest pane index), by the table's key;
    the pane's own fields left out."""
    newest: dict[tuple, dict] = {}
    for row in panes(out, table):
        key = tuple(row[name] for name in TABLE_KEYS[table])
        if key not in newest or row["pane_index"] > newest[key]["pane_index"]:
            newest[key] = row
    return {key: {k: v for k, v in row.items() if k not in PANE_COLUMNS} for key, row in newest.items()}
