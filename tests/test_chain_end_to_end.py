"""Issue 25's end-to-end tests, through the command line against real processes: one anvil node
for the module (its blocks 20 s apart from 2024-01-01, see ``tests/support/chain_runs.py``), the
session's Kafka broker, Prism.

- The same blocks give the same on-chain tables whichever way they travel: ``chain export`` then
  ``backfill``, or ``collect --chain`` then ``stream``; both equal the plain-Python reference over
  the transfers the test made.
- A reorg of depth 3 while collect and the stream run, after the stream closed the window of the
  first orphaned block: the stream's final rows equal a backfill of the chain the node holds
  afterwards, no orphaned transfer survives, and collect and the stream count the retractions.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.anvil import Anvil, running_anvil
from tests.support.chain_runs import (
    ANVIL_ARGS,
    BLOCKS_PER_MINUTE,
    backfill_chain,
    block_seconds,
    chain_topics,
    clock_blocks,
    collect,
    create_chain_topics,
    export,
    finish_collect,
    mine_to_minute_start,
    newest_panes,
    panes,
    start_collect,
    wait_for_tip,
    write_labels,
    write_tokens,
)
from tests.support.outputs import summary
from tests.support.streams import finish, start_stream

MINUTE_US = 60_000_000


@dataclass
class TokenChain:
    node: Anvil
    usd: str
    """A token the ``--tokens`` file names: 6 decimals, canonical asset USDT."""
    raw: str
    """A token in no list: raw volumes only."""
    entities: dict[str, str]
    options: tuple[str, ...]
    """``--tokens`` and ``--labels``, for a backfill and a stream alike."""


@pytest.fixture(scope="module")
def anvil_node(tmp_path_factory):
    """The module's node, its blocks on a known clock."""
    with running_anvil(tmp_path_factory.mktemp("anvil"), extra_args=ANVIL_ARGS) as node:
        clock_blocks(node)
        yield node


@pytest.fixture(scope="module")
def chain(anvil_node, tmp_path_factory):
    """Two test tokens and ten funded accounts on the module's node, three of them the wallets of
    two exchanges."""
    node, a, work = anvil_node, anvil_node.accounts, tmp_path_factory.mktemp("chain")
    usd = node.deploy_token("Test Dollar", "TUSD", decimals=6, supply=10**30)
    raw = node.deploy_token("Raw Token", "RAW", decimals=18, supply=10**30)
    node.transfers_in_one_block([(token, a[0], holder, 10**27) for token in (usd, raw) for holder in a[1:]])
    entities = {a[1]: "Exchange A", a[2]: "Exchange A", a[3]: "Exchange B"}
    options = (
        "--tokens",
        str(write_tokens(work / "tokens.csv", {usd: ("TUSD", 6, "USDT")})),
        "--labels",
        str(write_labels(work / "labels.csv", entities)),
    )
    return TokenChain(node, usd, raw, entities, options)


@dataclass(frozen=True)
class Sent:
    token: str
    sender: str
    receiver: str
    value: int
    block: int


def mine_transfers(
    chain: TokenChain, rng: random.Random, blocks: int, fewest: int = 0, most: int = 3, tokens: tuple = ()
) -> list[Sent]:
    """``blocks`` blocks of ``fewest`` to ``most`` transfers each, of the tokens (default both)
    between any of the accounts (labelled or not, an entity's own wallets too); the transfers made."""
    a, made = chain.node.accounts, []
    for _ in range(blocks):
        batch = [
            (rng.choice(tokens or (chain.usd, chain.raw)), rng.choice(a), rng.choice(a), rng.randrange(1, 10**21))
            for _ in range(rng.randint(fewest, most))
        ]
        made += mine_block(chain, batch)
    return made


def mine_block(chain: TokenChain, transfers: list[tuple]) -> list[Sent]:
    """One block of (token, sender, receiver, value) transfers, or an empty one; the transfers made."""
    if transfers:
        chain.node.transfers_in_one_block(transfers)
    else:
        chain.node.mine()
    return [Sent(*transfer, chain.node.block_number()) for transfer in transfers]


def reference(chain: TokenChain, canonical: list[Sent]) -> tuple[dict, dict]:
    """Plain Python over the canonical transfers: token activity by (token, window start), and by
    (token, entity, window start) the flows (inflow, outflow, their counts) of entities that moved."""
    activity: dict = {}
    flows: dict = {}
    for sent in canonical:
        start = block_seconds(sent.block) * 1_000_000 // MINUTE_US * MINUTE_US
        figures = activity.setdefault((sent.token, start), [0, 0, set(), set()])
        figures[0] += 1
        figures[1] += sent.value
        figures[2].add(sent.sender)
        figures[3].add(sent.receiver)
        source, target = chain.entities.get(sent.sender), chain.entities.get(sent.receiver)
        if source != target:  # between two wallets of one entity: internal, no flow
            if target is not None:
                flow = flows.setdefault((sent.token, target, start), [0, 0, 0, 0])
                flow[0] += sent.value
                flow[2] += 1
            if source is not None:
                flow = flows.setdefault((sent.token, source, start), [0, 0, 0, 0])
                flow[1] += sent.value
                flow[3] += 1
    decimals = {chain.usd: 6}
    return (
        {
            (token, start): {
                "transfer_count": count,
                "volume_raw": str(value),
                "unique_senders": len(senders),
                "unique_receivers": len(receivers),
                "volume": float(Fraction(value, 10 ** decimals[token])) if token in decimals else None,
            }
            for (token, start), (count, value, senders, receivers) in activity.items()
        },
        {key: tuple(flow) for key, flow in flows.items()},
    )


def micros(moment) -> int:
    return int(moment.timestamp()) * 1_000_000


def as_reference(activity: dict, flows: dict) -> tuple[dict, dict]:
    """A run's newest rows in the reference's shape, those of no transfer left out (a stream's
    revision of a window whose every transfer a reorg withdrew, of an entity that moved nothing)."""
    figures = ("transfer_count", "volume_raw", "unique_senders", "unique_receivers", "volume")
    return (
        {
            (token, micros(start)): {name: row[name] for name in figures}
            for (token, start), row in activity.items()
            if row["transfer_count"]
        },
        {
            (token, entity, micros(start)): moved
            for (token, entity, start), row in flows.items()
            if any(
                moved := (int(row["inflow_raw"]), int(row["outflow_raw"]), row["inflow_count"], row["outflow_count"])
            )
        },
    )


def test_export_then_backfill_equals_collect_then_stream(anvil_node, chain, kafka_bootstrap, tmp_path):
    node, a = chain.node, chain.node.accounts
    first = mine_to_minute_start(node)
    # A transfer of nothing to itself, one within an entity, one between two; then random ones.
    made = mine_block(chain, [(chain.usd, a[1], a[1], 0), (chain.usd, a[1], a[2], 5), (chain.raw, a[2], a[3], 7)])
    made += mine_transfers(chain, random.Random(1), blocks=8 * BLOCKS_PER_MINUTE - 1)
    last = node.block_number()

    exported = export(node.url, first, last, tmp_path / "export")
    backfilled = backfill_chain(exported, first, last, tmp_path / "backfill", *chain.options)
    assert backfilled["reconciled"], backfilled["problems"]
    assert backfilled["token_transfers"]["records_in"] == len(made)

    topics = chain_topics()
    create_chain_topics(kafka_bootstrap, topics)
    collected = collect(node.url, kafka_bootstrap, topics, "--from-block", str(first), "--until-block", str(last))
    assert (collected["blocks published"], collected["token transfers published"]) == (last - first + 1, len(made))
    out = tmp_path / "stream"
    stream = start_stream(
        kafka_bootstrap, f"{topics['token_transfers']}-no-trades", out, "--transfers-topic",
        topics["token_transfers"], "--bars", "chain:1m", *chain.options, "--watermark-delay", "1s",
        "--stop-when-idle", "3s", group=topics["token_transfers"],
    )  # fmt: skip
    finish(stream, out)
    streamed = summary(out)
    assert streamed["reconciled"], streamed["problems"]
    assert streamed["token_transfers"]["records_in"] == len(made)

    for table in ("token_activity", "exchange_flows"):
        backfill_rows = newest_panes(tmp_path / "backfill", table)
        assert backfill_rows and newest_panes(out, table) == backfill_rows, table
    activity, flows = newest_panes(out, "token_activity"), newest_panes(out, "exchange_flows")
    assert as_reference(activity, flows) == reference(chain, made)
    assert {entity for (_, entity, _) in flows} == {"Exchange A", "Exchange B"}
    assert {row["token_known"] for row in activity.values()} == {True, False}


def test_a_depth_3_reorg_during_a_live_stream_leaves_the_canonical_chain(anvil_node, chain, kafka_bootstrap, tmp_path):
    node, a, rng = chain.node, chain.node.accounts, random.Random(2)
    first = mine_to_minute_start(node)
    # Blocks up to the reorg's newest, ``head``, 20 s past a minute: the stream's watermark (its
    # newest transfer's time less 1 s) then closes the window of the first orphaned block and
    # leaves the second's and the third's open.
    made = mine_transfers(chain, rng, blocks=2 * BLOCKS_PER_MINUTE)
    made += mine_transfers(chain, rng, blocks=2, fewest=1, tokens=(chain.usd,))
    # The blocks the reorg orphans: in the closed window the only transfer of RAW (so the window
    # of RAW ends with none), then transfers in and out of both exchanges.
    orphaned = mine_block(chain, [(chain.raw, a[1], a[8], 10**20 + 1), (chain.usd, a[5], a[3], 10**20 + 2)])
    orphaned += mine_block(chain, [(chain.usd, a[2], a[6], 10**20 + 3)])
    orphaned += mine_block(chain, [(chain.raw, a[7], a[3], 10**20 + 4), (chain.usd, a[0], a[9], 10**20 + 5)])
    made += orphaned
    head = node.block_number()
    assert block_seconds(head) % 60 == 20
    closed_window = block_seconds(head - 2) // 60 * MINUTE_US

    topics, checkpoint = chain_topics(), tmp_path / "ethereum.json"
    create_chain_topics(kafka_bootstrap, topics)
    last = head + 2 * BLOCKS_PER_MINUTE
    collector = start_collect(
        node.url, kafka_bootstrap, topics, tmp_path / "collect.log", "--from-block", str(first), "--until-block",
        str(last), "--checkpoint", str(checkpoint),
    )  # fmt: skip
    wait_for_tip(checkpoint, head, collector, tmp_path / "collect.log")
    out = tmp_path / "stream"
    # The stream must still run when the reorg's messages come: its idle time spans the closed
    # window's flush, the reorg and the collector's next poll, on a slow machine too.
    stream = start_stream(
        kafka_bootstrap, f"{topics['token_transfers']}-no-trades", out, "--transfers-topic",
        topics["token_transfers"], "--bars", "chain:1m", *chain.options, "--watermark-delay", "1s",
        "--allowed-lateness", "30m", "--stop-when-idle", "20s", group=topics["token_transfers"],
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not [p for p in panes(out, "token_activity") if micros(p["window_start"]) == closed_window]:
        assert time.monotonic() < deadline and stream.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.2)

    replacements = [
        Sent(chain.usd, a[4], a[1], 7_000_001, head - 2),  # into Exchange A
        Sent(chain.usd, a[3], a[5], 7_000_002, head - 1),  # out of Exchange B
        Sent(chain.raw, a[6], a[7], 7_000_003, head),
    ]
    node.reorg(3, [(s.token, s.sender, s.receiver, s.value, s.block - (head - 2)) for s in replacements])
    after = mine_transfers(chain, rng, 2 * BLOCKS_PER_MINUTE, fewest=1)
    collected = finish_collect(collector, tmp_path / "collect.log")
    finish(stream, out)
    canonical = made[: len(made) - len(orphaned)] + replacements + after

    assert (collected["reorgs"], collected["deepest reorg (blocks)"], collected["blocks retracted"]) == (1, 3, 3)
    assert collected["token transfers retracted"] == len(orphaned)
    assert collected["token transfers published"] == len(made) + len(replacements) + len(after)
    assert collected["blocks published"] == last - first + 1 + 3
    streamed = summary(out)
    assert streamed["reconciled"], streamed["problems"]
    counted = streamed["token_transfers"]
    assert counted["records_in"] == collected["token transfers published"] + len(orphaned)
    assert (counted["retracted"], counted["duplicates"]) == (2 * len(orphaned), 0)
    assert counted["in_aggregates"] == len(canonical)

    backfilled = backfill_chain(
        export(node.url, first, last, tmp_path / "export"), first, last, tmp_path / "backfill", *chain.options
    )
    assert backfilled["reconciled"] and backfilled["token_transfers"]["records_in"] == len(canonical)
    activity, flows = newest_panes(out, "token_activity"), newest_panes(out, "exchange_flows")
    expected_activity = newest_panes(tmp_path / "backfill", "token_activity")
    ignoring_retractions = lambda row: {k: v for k, v in row.items() if k not in ("retracted_count",)}  # noqa: E731
    assert {key: ignoring_retractions(row) for key, row in activity.items() if row["transfer_count"]} == {
        key: ignoring_retractions(row) for key, row in expected_activity.items()
    }
    withdrawn = {key: row for key, row in activity.items() if key not in expected_activity}
    assert list(withdrawn) == [(chain.raw, datetime.fromtimestamp(closed_window / 1e6, timezone.utc))]
    assert [
        (row["transfer_count"], row["volume_raw"], row["unique_senders"], row["retracted_count"])
        for row in withdrawn.values()
    ] == [(0, "0", 0, 2)]
    moved = lambda row: any(row[name] for name in ("inflow_count", "outflow_count"))  # noqa: E731
    assert {key: row for key, row in flows.items() if moved(row)} == newest_panes(
        tmp_path / "backfill", "exchange_flows"
    )
    assert as_reference(activity, flows) == reference(chain, canonical)
    assert sum(row["retracted_count"] for row in activity.values()) == 2 * len(orphaned)  # and what they withdrew
    assert sum(row["transfer_count"] for row in activity.values()) == len(canonical)
    # The window the watermark had closed: its on-time pane counted the orphaned transfers, a late
    # pane took them back out.
    token = orphaned[0].token
    closed = sorted(
        (
            p
            for p in panes(out, "token_activity")
            if p["token_address"] == token and micros(p["window_start"]) == closed_window
        ),
        key=lambda p: p["pane_index"],
    )
    before, final = reference(chain, made)[0], reference(chain, canonical)[0]
    assert (closed[0]["pane_timing"], closed[0]["transfer_count"]) == (
        "ON_TIME",
        before[(token, closed_window)]["transfer_count"],
    )
    assert closed[-1]["pane_timing"] == "LATE" and closed[-1]["retracted_count"] > 0
    assert closed[-1]["transfer_count"] == final.get((token, closed_window), {"transfer_count": 0})["transfer_count"]
