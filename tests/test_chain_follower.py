"""The chain follower's rules (io_connectors/chain_follower.py) over hand-built chains.

``MemoryNode`` holds a chain in memory and answers like ``EthereumRpc``: the node's JSON for its
blocks and Transfer logs, so the follower reads them through the real converters. Reorgs replace
its newest blocks with new ones of new hashes and other transfers, or go back to a branch it had
before (its blocks and transfers unchanged). The end-to-end test against a real anvil node and
Kafka is tests/test_chain_collect.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.chain_follower import (
    BLOCK,
    DEAD_LETTER,
    FINALIZED,
    LATEST,
    SAFE,
    TOKEN_TRANSFER,
    ChainFollower,
    CheckpointError,
    FollowerState,
    NotConnected,
    ReorgTooDeep,
    UnreadableAnswer,
)
from io_connectors.ethereum_rpc import TRANSFER_TOPIC, NodeError, block_row, transfer_rows

TOKENS = ["0x" + f"{i:040x}" for i in (0xA1, 0xB2)]
HOLDERS = ["0x" + f"{i:040x}" for i in (0x11, 0x22, 0x33)]


def _hex_hash(*parts) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _word(address: str) -> str:
    return "0x" + address[2:].rjust(64, "0")


class MemoryNode:
    """A chain in memory behind ``ChainNode``'s methods. ``tags``: (safe, finalized) distances below
    the head the node answers for its tags, or None for a node that refuses them."""

    def __init__(self, length: int = 1, transfers_per_block: int = 2, tags: tuple[int, int] | None = (32, 64)):
        self.by_hash: dict[str, dict] = {}
        self.logs: dict[str, list[dict]] = {}
        self.canonical: list[str] = []
        self.transfers_per_block, self.tags = transfers_per_block, tags
        self.forks = 0
        self.broken: set[str] = set()  # hashes whose block JSON the node garbles
        self.branches: list[list[str]] = []  # every chain the node left, oldest first
        self.mine(length)

    @property
    def head(self) -> int:
        return len(self.canonical) - 1

    def mine(self, blocks: int = 1, transfers: int | None = None) -> None:
        for _ in range(blocks):
            self._add(self.transfers_per_block if transfers is None else transfers)

    def reorg(self, depth: int, new_blocks: int | None = None, transfers: int | None = None) -> None:
        """Replace the newest ``depth`` blocks by ``new_blocks`` (as many by default) of a new fork."""
        self.forks += 1
        self.branches.append(list(self.canonical))
        del self.canonical[len(self.canonical) - depth :]
        self.mine(depth if new_blocks is None else new_blocks, transfers)

    def return_to(self, branch: list[str], length: int | None = None) -> None:
        """Go back to a chain it had (``branch``, its hashes), mining new blocks on it up to
        ``length`` blocks: the restored blocks come back with their hashes and transfers."""
        self.forks += 1  # blocks mined on the branch now differ from any mined on it before
        self.branches.append(list(self.canonical))
        self.canonical = list(branch)
        self.mine(max(0, (length or 0) - len(self.canonical)))

    def _add(self, transfers: int) -> None:
        number = len(self.canonical)
        block_hash = _hex_hash("block", self.forks, number)
        parent = self.canonical[-1] if self.canonical else "0x" + "0" * 64
        transactions = [_hex_hash("tx", self.forks, number, i) for i in range(transfers)]
        self.by_hash[block_hash] = {
            "number": hex(number),
            "hash": block_hash,
            "parentHash": parent,
            "timestamp": hex(1_700_000_000 + 12 * number + self.forks),
            "miner": HOLDERS[0],
            "gasUsed": hex(21_000 * transfers),
            "gasLimit": hex(30_000_000),
            "baseFeePerGas": hex(7),
            "transactions": transactions,
        }
        self.logs[block_hash] = [
            {
                "address": TOKENS[(number + i) % 2],
                "topics": [TRANSFER_TOPIC, _word(HOLDERS[i % 3]), _word(HOLDERS[(i + self.forks + 1) % 3])],
                "data": "0x" + f"{(number + 1) * 1000 + i + self.forks:064x}",
                "blockHash": block_hash,
                "blockNumber": hex(number),
                "transactionHash": transaction,
                "logIndex": hex(i),
                "removed": False,
            }
            for i, transaction in enumerate(transactions)
        ]
        self.canonical.append(block_hash)

    # -- ChainNode ---------------------------------------------------------------------------------

    def block_number(self) -> int:
        return self.head

    def blocks_by_number(self, blocks) -> list[dict | None]:
        return [self._by_number(block) for block in blocks]

    def _by_number(self, block):
        if isinstance(block, str):
            if self.tags is None:
                raise NodeError("eth_getBlockByNumber: node error -32602: unknown block tag", code=-32602)
            block = max(0, self.head - self.tags[0 if block == "safe" else 1])
        return self._answer(self.canonical[block]) if block <= self.head else None

    def block_by_hash(self, block_hash: str) -> dict | None:
        return self._answer(block_hash) if block_hash in self.by_hash else None

    def _answer(self, block_hash: str) -> dict:
        block = dict(self.by_hash[block_hash])
        if block_hash in self.broken:
            del block["parentHash"]
        return block

    def transfer_logs_of_block(self, block_hash: str) -> list[dict]:
        return [dict(entry) for entry in self.logs.get(block_hash, [])]

    # -- what the chain holds now --------------------------------------------------------------

    def canonical_records(self, first: int = 0) -> tuple[list[dict], list[dict]]:
        blocks, transfers = [], []
        for block_hash in self.canonical[first:]:
            row = block_row(self.by_hash[block_hash])
            blocks.append(row)
            transfers += transfer_rows(self.logs[block_hash], {block_hash: row["timestamp"]}, "memory")[0]
        return blocks, transfers


def identity(event) -> tuple:
    """What a consumer tells records apart by (besides ``retracted``): id and publication."""
    record = event.record
    return (event.kind, record["hash"] if event.kind == BLOCK else record["transfer_id"], record["publication"])


def content(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("status", "retracted", "publication")}


def net_records(events) -> dict[tuple, dict]:
    """What the events leave standing, by (kind, id): every retraction withdraws exactly one
    standing record of its identity, and every record published is new (no copy of one published
    before, standing or withdrawn), so a consumer's dedupe keeps it."""
    standing: dict[tuple, dict] = {}
    published: set[tuple] = set()
    for event in events:
        if event.kind == DEAD_LETTER:
            continue
        key = identity(event)
        if event.record["retracted"]:
            assert key in standing, f"a retraction of {key}, which is not standing"
            assert content(standing.pop(key)) == content(event.record)
        else:
            assert key not in published, f"{key} published twice: a consumer drops the second as a copy"
            published.add(key)
            standing[key] = event.record
    net = {key[:2]: record for key, record in standing.items()}
    assert len(net) == len(standing), "two publications of one record standing"
    return net


def assert_net_is_canonical(events, node: MemoryNode, first: int = 0) -> None:
    blocks, transfers = node.canonical_records(first)
    expected = {(BLOCK, b["hash"]): content(b) for b in blocks} | {
        (TOKEN_TRANSFER, t["transfer_id"]): content(t) for t in transfers
    }
    assert {key: content(record) for key, record in net_records(events).items()} == expected


def follow(node: MemoryNode, reorg_depth: int = 64, start_block: int | None = 0, **options):
    return ChainFollower(node, FollowerState(reorg_depth=reorg_depth), start_block=start_block, **options)


def step_until_idle(follower: ChainFollower, steps: int = 1000) -> list:
    events = []
    for _ in range(steps):
        new = follower.step()
        if not new:
            return events
        events += new
    raise AssertionError("the follower never caught up")


def kinds_and_heights(events) -> list[tuple]:
    return [
        (e.kind, e.record["number"] if e.kind == BLOCK else e.record["block_number"], e.record["retracted"])
        for e in events
    ]


def test_extension_emits_each_block_then_its_transfers_once():
    node = MemoryNode(length=4, transfers_per_block=2)
    follower = follow(node)
    events = follower.step()
    assert kinds_and_heights(events) == [
        kind for n in range(4) for kind in [(BLOCK, n, False), (TOKEN_TRANSFER, n, False), (TOKEN_TRANSFER, n, False)]
    ]
    assert follower.step() == []  # nothing new
    node.mine(1)
    assert kinds_and_heights(follower.step()) == [
        (BLOCK, 4, False),
        (TOKEN_TRANSFER, 4, False),
        (TOKEN_TRANSFER, 4, False),
    ]
    counts = follower.state.counts
    assert (counts.blocks_published, counts.transfers_published, counts.duplicates, counts.reorgs) == (5, 10, 0, 0)
    assert counts.reconciles


def test_a_depth_3_reorg_retracts_exactly_the_orphaned_blocks_records_then_emits_the_new_ones():
    node = MemoryNode(length=11, transfers_per_block=2)
    follower = follow(node)
    before = follower.step()
    orphaned = {h: node.logs[h] for h in node.canonical[8:]}
    node.reorg(3, transfers=1)
    events = follower.step()

    retractions = [e for e in events if e.record["retracted"]]
    assert kinds_and_heights(retractions) == [
        (TOKEN_TRANSFER, 10, True),
        (TOKEN_TRANSFER, 10, True),
        (BLOCK, 10, True),
        (TOKEN_TRANSFER, 9, True),
        (TOKEN_TRANSFER, 9, True),
        (BLOCK, 9, True),
        (TOKEN_TRANSFER, 8, True),
        (TOKEN_TRANSFER, 8, True),
        (BLOCK, 8, True),
    ]
    assert events[: len(retractions)] == retractions  # every retraction before the new blocks
    emitted_before = {identity(e): e.record for e in before}
    for event in retractions:
        assert event.record == {**emitted_before[identity(event)], "retracted": True}
    assert {e.record["hash"] for e in retractions if e.kind == BLOCK} == set(orphaned)
    assert kinds_and_heights(events[len(retractions) :]) == [
        (kind, n, False) for n in (8, 9, 10) for kind in (BLOCK, TOKEN_TRANSFER)
    ]
    assert [e.record["hash"] for e in events[len(retractions) :] if e.kind == BLOCK] == node.canonical[8:]
    assert_net_is_canonical(before + events, node)
    counts = follower.state.counts
    assert (counts.reorgs, counts.deepest_reorg, counts.blocks_retracted, counts.transfers_retracted) == (1, 3, 3, 6)


def test_a_head_that_jumps_is_filled_in_order_without_gap_or_duplicate():
    node = MemoryNode(length=6)
    follower = follow(node)
    first = follower.step()
    node.mine(9)
    events = follower.step()
    assert [e.record["number"] for e in events if e.kind == BLOCK] == list(range(6, 15))
    assert follower.state.counts.gap_blocks == 8
    assert_net_is_canonical(first + events, node)


def test_small_steps_catch_up_over_several_polls():
    node = MemoryNode(length=23)
    follower = follow(node, max_blocks_per_step=5)
    steps = [follower.step() for _ in range(6)]
    assert [len([e for e in s if e.kind == BLOCK]) for s in steps] == [5, 5, 5, 5, 3, 0]
    assert_net_is_canonical([e for s in steps for e in s], node)


def test_a_reorg_found_while_catching_up_a_gap():
    node = MemoryNode(length=10)
    follower = follow(node)
    events = follower.step()
    node.reorg(2, new_blocks=6)  # the new fork is longer: heights 8..13
    events += follower.step()
    assert follower.state.counts.blocks_retracted == 2
    assert_net_is_canonical(events, node)


def test_a_shorter_fork_retracts_the_heights_it_no_longer_has():
    node = MemoryNode(length=10)
    follower = follow(node)
    events = follower.step()
    node.reorg(4, new_blocks=2)  # heights 6..7 replace 6..9
    events += follower.step()
    assert follower.state.tip == 7 and follower.state.counts.blocks_retracted == 4
    assert_net_is_canonical(events, node)


def publications(events, kind: str = BLOCK, retracted: bool = False) -> list[tuple[int, int]]:
    """(height, publication) of the events' records of a kind, retracted or not, in order."""
    return [
        (e.record["number"] if kind == BLOCK else e.record["block_number"], e.record["publication"])
        for e in events
        if e.kind == kind and e.record["retracted"] == retracted
    ]


def test_a_reorg_back_to_the_first_branch_publishes_its_records_anew_with_the_next_publication():
    node = MemoryNode(length=11, transfers_per_block=2)
    follower = follow(node)
    first = follower.step()  # branch A: blocks 0..10, publication 0
    branch_a = list(node.canonical)
    node.reorg(3)  # branch B: 8..10 replaced
    to_b = follower.step()
    node.return_to(branch_a)  # back to A: its blocks 8..10, hashes and transfers as before
    back_to_a = follower.step()

    assert publications(back_to_a, BLOCK, retracted=True) == [(10, 0), (9, 0), (8, 0)]  # B's, withdrawn
    assert publications(back_to_a, BLOCK) == [(8, 1), (9, 1), (10, 1)]
    assert publications(back_to_a, TOKEN_TRANSFER) == [(n, 1) for n in (8, 9, 10) for _ in range(2)]
    first_a = {e.record["transfer_id"]: e.record for e in first if e.kind == TOKEN_TRANSFER}
    for event in back_to_a:
        if event.kind == TOKEN_TRANSFER and not event.record["retracted"]:
            assert event.record == {**first_a[event.record["transfer_id"]], "publication": 1}
    assert_net_is_canonical(first + to_b + back_to_a, node)

    node.return_to(node.branches[-1])  # B once more: its records' second publication
    again_b = follower.step()
    assert publications(again_b, BLOCK, retracted=True) == [(10, 1), (9, 1), (8, 1)]
    assert publications(again_b, BLOCK) == [(8, 1), (9, 1), (10, 1)]
    node.return_to(branch_a)
    third_a = follower.step()
    assert publications(third_a, BLOCK) == [(8, 2), (9, 2), (10, 2)]
    assert_net_is_canonical(first + to_b + back_to_a + again_b + third_a, node)
    counts = follower.state.counts
    assert (counts.reorgs, counts.blocks_retracted, counts.transfers_retracted) == (4, 12, 24)
    assert counts.reconciles


def test_a_deeper_return_over_two_forks_and_a_restart_in_between(tmp_path):
    node = MemoryNode(length=12, transfers_per_block=1)
    follower = follow(node, reorg_depth=6)
    events = follower.step()
    branch_a = list(node.canonical)
    node.reorg(3)  # B: 9..11
    events += follower.step()
    node.reorg(5, new_blocks=6)  # C: 7..12, forking below B
    events += follower.step()
    follower.state.save(str(tmp_path / "c.json"))
    state = FollowerState(reorg_depth=6)
    assert state.load(str(tmp_path / "c.json"))
    assert {state.withdrawn_publication(h) for h in branch_a[9:]} == {0}  # remembered across the restart
    node.return_to(branch_a, length=14)  # A's 7..11 restored, then 12..13 mined on it
    later = ChainFollower(node, state).step()
    assert publications(later, BLOCK) == [(7, 1), (8, 1), (9, 1), (10, 1), (11, 1), (12, 0), (13, 0)]
    assert_net_is_canonical(events + later, node)


def test_an_orphaned_blocks_publication_is_forgotten_once_it_is_below_the_kept_blocks():
    node = MemoryNode(length=6, transfers_per_block=0)
    follower = follow(node, reorg_depth=3)
    follower.step()
    orphaned = node.canonical[-1]
    node.reorg(1)
    follower.step()
    assert follower.state.withdrawn_publication(orphaned) == 0
    assert follower.state.to_json()["withdrawn"] == [{"hash": orphaned, "number": 5, "publication": 0}]
    node.mine(2)
    follower.step()  # anchor 4: height 5 may still come back
    assert follower.state.withdrawn_publication(orphaned) == 0
    node.mine(1)
    follower.step()  # anchor 5: a block at height 5 other than the kept one is a reorg too deep
    assert follower.state.withdrawn_publication(orphaned) is None
    assert follower.state.to_json()["withdrawn"] == []


def test_a_checkpoint_of_another_format_is_refused():
    follower = follow(MemoryNode(length=6))
    follower.step()
    document = follower.state.to_json()
    with pytest.raises(CheckpointError, match="format 1"):
        FollowerState().restore({**document, "format": 2})


def test_a_reorg_deeper_than_kept_fails_loudly_with_dead_letters_and_changes_nothing():
    node = MemoryNode(length=11)
    follower = follow(node, reorg_depth=3)
    events = follower.step()
    kept = follower.state.to_json()
    node.reorg(5)
    with pytest.raises(ReorgTooDeep) as raised:
        follower.step()
    message = str(raised.value)
    assert "\n" not in message and "deeper than the 3 blocks kept" in message
    letters = raised.value.dead_letters
    assert [letter["reason"] for letter in letters] == ["reorg_too_deep"] * 4
    assert [json.loads(letter["payload_string"])["hash"] for letter in letters] == node.canonical[7:]
    assert follower.state.to_json() == kept  # nothing retracted, nothing emitted: never quietly absorbed
    with pytest.raises(ReorgTooDeep):
        follower.step()
    assert net_records(events)  # what was emitted stands until an operator decides
    assert follower.state.counts.reconciles


def test_a_reorg_of_exactly_the_depth_kept_is_reconciled():
    node = MemoryNode(length=11)
    follower = follow(node, reorg_depth=3)
    events = follower.step()
    node.reorg(3)
    events += follower.step()
    assert follower.state.counts.deepest_reorg == 3
    assert_net_is_canonical(events, node)


def test_a_restart_from_the_checkpoint_resumes_without_gap_or_duplicate(tmp_path):
    checkpoint = str(tmp_path / "follower.json")

    def run(node, interrupted: bool):
        follower, events = follow(node), []
        for change in (lambda: node.mine(3), lambda: node.reorg(2, new_blocks=3), lambda: node.mine(1)):
            change()
            events += follower.step()
            if interrupted:
                follower.state.save(checkpoint)
                state = FollowerState()
                assert state.load(checkpoint)
                follower = ChainFollower(node, state, start_block=0)
        return events

    node = MemoryNode(length=5)
    uninterrupted, restarted = run(MemoryNode(length=5), False), run(node, True)
    assert restarted == uninterrupted
    assert_net_is_canonical(restarted, node)


def test_a_restarted_follower_still_retracts_what_it_emitted_before_the_restart(tmp_path):
    node = MemoryNode(length=8)
    follower = follow(node)
    events = follower.step()
    follower.state.save(str(tmp_path / "c.json"))
    state = FollowerState()
    state.load(str(tmp_path / "c.json"))
    node.reorg(3)
    later = ChainFollower(node, state).step()
    assert [e.record["hash"] for e in later if e.kind == BLOCK and e.record["retracted"]][::-1] == [
        e.record["hash"] for e in events if e.kind == BLOCK
    ][-3:]
    assert_net_is_canonical(events + later, node)


def test_statuses_come_from_the_nodes_tags():
    node = MemoryNode(length=11, tags=(2, 4))  # head 10: finalized up to 6, safe up to 8
    follower = follow(node)
    statuses = {e.record["number"]: e.record["status"] for e in follower.step() if e.kind == BLOCK}
    assert statuses == {n: FINALIZED if n <= 6 else SAFE if n <= 8 else LATEST for n in range(11)}
    assert follower.state.finalized_up_to == 6
    node.mine(3)
    follower.step()
    assert follower.state.finalized_up_to == 9  # upgrades are reported as a height, not re-emitted


def test_statuses_by_depth_when_the_node_refuses_the_tags():
    node = MemoryNode(length=11, tags=None)
    follower = ChainFollower(node, FollowerState(safe_depth=3, finalized_depth=5), start_block=0)
    events = follower.step()
    statuses = {e.record["number"]: e.record["status"] for e in events if e.kind == BLOCK}
    assert statuses == {n: FINALIZED if n <= 5 else SAFE if n <= 7 else LATEST for n in range(11)}
    assert all(e.record["status"] == statuses[e.record["block_number"]] for e in events if e.kind == TOKEN_TRANSFER)


def test_a_reorg_of_a_block_emitted_as_finalized_is_retracted_and_counted():
    node = MemoryNode(length=11, tags=(0, 1))  # head 10: finalized up to 9
    follower = follow(node)
    events = follower.step()
    node.reorg(3)
    events += follower.step()
    assert follower.state.counts.finalized_retracted == 6  # blocks 8 and 9, two transfers each
    assert_net_is_canonical(events, node)


def test_a_garbled_block_is_a_dead_letter_and_the_step_is_repeated_later():
    node = MemoryNode(length=3)
    follower = follow(node)
    events = follower.step()
    node.mine(2)
    node.broken.add(node.canonical[-1])
    with pytest.raises(UnreadableAnswer) as raised:
        follower.step()
    assert (
        raised.value.dead_letter["reason"] == "malformed" and "parentHash" in raised.value.dead_letter["error_message"]
    )
    assert follower.state.tip == 2
    node.broken.clear()
    events += follower.step()
    assert_net_is_canonical(events, node)
    counts = follower.state.counts
    assert (counts.malformed_responses, counts.dead_letters) == (1, 1) and counts.reconciles


def test_a_fresh_start_at_the_head_anchors_below_it():
    node = MemoryNode(length=10)
    follower = follow(node, start_block=None)
    events = follower.step()
    assert [e.record["number"] for e in events if e.kind == BLOCK] == [9]
    node.reorg(1)
    events += follower.step()
    assert_net_is_canonical(events, node, first=9)


def test_apply_refuses_blocks_that_do_not_connect_and_counts_repeats():
    node = MemoryNode(length=6)
    blocks, transfers = node.canonical_records()
    by_block = {b["hash"]: [t for t in transfers if t["block_hash"] == b["hash"]] for b in blocks}
    state = FollowerState()
    for block in blocks[:3]:
        state.apply(block, by_block[block["hash"]])
    with pytest.raises(NotConnected, match="past the tip"):
        state.apply(blocks[4], by_block[blocks[4]["hash"]])
    assert state.apply(blocks[1], by_block[blocks[1]["hash"]]) == []
    assert state.counts.duplicates == 3
    other = MemoryNode(length=6)
    other.reorg(4)  # heights 2..5 of another fork
    stranger = block_row(other.by_hash[other.canonical[3]])
    with pytest.raises(NotConnected, match="ancestors must come first"):
        state.apply(stranger)
    misplaced = dict(by_block[blocks[4]["hash"]][0])
    events = state.apply(blocks[3], [misplaced])
    assert [e.kind for e in events] == [BLOCK, DEAD_LETTER]
    assert events[1].record["reason"] == "transfer_not_in_block"
    assert state.counts.reconciles


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(1, 4), st.just(0), st.integers(0, 1)),
        st.tuples(st.just("reorg"), st.integers(1, 5), st.integers(0, 3), st.integers(0, 2)),
        st.tuples(st.just("back"), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("back"), st.just(1), st.just(0), st.just(1)),  # A, B, A again: the flip-flop
        st.tuples(st.just("restart"), st.just(0), st.just(0), st.just(0)),
    ),
    min_size=3,
    max_size=25,
)
"""(what the node or the follower does, its two figures, polls after it): mine (blocks); reorg (depth,
blocks more than it replaces); back (to the branch the node left that many reorgs ago, then blocks
mined on it); restart from the checkpoint."""


@settings(max_examples=300)
@given(
    operations=OPERATIONS,
    blocks_per_step=st.integers(1, 6),
    transfers=st.integers(0, 3),
    tags=st.sampled_from([None, (1, 3), (32, 64)]),
)
def test_the_net_of_what_is_emitted_is_the_final_canonical_chain(operations, blocks_per_step, transfers, tags):
    node = MemoryNode(length=6, transfers_per_block=transfers, tags=tags)
    state = FollowerState(reorg_depth=8)
    follower = ChainFollower(node, state, start_block=0, max_blocks_per_step=blocks_per_step)
    events = []
    for kind, first, second, polls in operations:
        if kind == "mine":
            node.mine(first)
        elif kind == "reorg":
            depth = min(first, node.head)  # genesis stays
            node.reorg(depth, new_blocks=depth + second)  # never shorter: no fork below the 8 kept
        elif kind == "back" and first <= len(node.branches):
            branch = node.branches[-first]
            anchor = state.anchor
            # Only a fork the follower can reconcile: the branch holds its anchor. Never shorter,
            # so the head stays at or above the follower's tip.
            if anchor is None or (anchor < len(branch) and branch[anchor] == state.hash_at(anchor)):
                node.return_to(branch, length=len(node.canonical) + second)
        elif kind == "restart":
            restored = FollowerState(reorg_depth=8)
            restored.restore(json.loads(json.dumps(state.to_json())))
            restored.counts = state.counts
            state = restored
            follower = ChainFollower(node, state, start_block=0, max_blocks_per_step=blocks_per_step)
        for _ in range(polls):
            events += follower.step()
    events += step_until_idle(follower)
    assert_net_is_canonical(events, node)
    counts = state.counts
    assert counts.reconciles
    published = Counter(e.kind for e in events if e.kind != DEAD_LETTER and not e.record["retracted"])
    retracted = Counter(e.kind for e in events if e.kind != DEAD_LETTER and e.record["retracted"])
    assert (published[BLOCK], published[TOKEN_TRANSFER]) == (counts.blocks_published, counts.transfers_published)
    assert (retracted[BLOCK], retracted[TOKEN_TRANSFER]) == (counts.blocks_retracted, counts.transfers_retracted)
