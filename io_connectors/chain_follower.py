"""Following a chain's head: canonical blocks and their token transfers, reorgs retracted, finality labelled.

Two parts, so the rules can be tested without a node:

- ``FollowerState`` is pure and deterministic. It keeps the recent canonical chain: for the last
  ``reorg_depth`` blocks the records it emitted, and below them one more block's hash (the
  anchor, what a replacement of all of them must build on). ``apply(block, transfers)`` turns one
  block that connects to it into events:

  * **extension**: the block's parent is the kept tip: its block row and transfers are emitted;
  * **repeat**: the kept block at that height has the same hash: nothing is emitted, the records
    are counted as duplicates;
  * **reorg**: the block's parent is a kept block below the tip: every kept block above the
    parent is orphaned. Each orphaned block's transfers (newest first) and then its block row are
    emitted again, unchanged but with ``retracted=True``, newest block first; then the new block.
  * **restoration**: a reorg back to a branch the follower had left brings back a block it
    retracted. Its records are emitted again with ``publication`` one more than the retracted
    ones (the first publication of a block's records is 0): ``transfer_id`` and the block hash
    are the same, so without the number the new publication would be a copy of the first,
    dropped by a consumer's dedupe while the retraction stays in force. A consumer's identity of
    a record is (id, ``publication``, ``retracted``), and a retraction carries the publication it
    withdraws. The last retracted publication of each orphaned hash is kept while its height is
    within the kept blocks (a block further down can no longer come back).
  * a block that does not connect (a gap, or a parent not yet applied) is refused with
    ``NotConnected``; one whose parent lies below the anchor with ``ReorgTooDeep``.

- ``ChainFollower`` is one poll of a node: any object with ``ChainNode``'s methods, which are
  ``EthereumRpc``'s; the node's JSON becomes rows through ``io_connectors.ethereum_rpc``'s
  converters, its unreadable logs dead letters. It asks for the head and the finality tags,
  fetches the next block (at most ``max_blocks_per_step`` past the tip), and walks back from it
  along parent hashes until it meets the kept chain: through a gap by number, in batches, and
  below the tip by hash. Each block's transfers are fetched by its hash, so they are the block's
  own even while the node reorganizes. Only once the whole branch is fetched is it applied,
  oldest first: a node failing mid-step changes nothing, and the step can simply be repeated.
  Between two polls the node may jump several blocks (no block is skipped: the walk fills them in
  order) or reorganize (the walk finds the fork point).

A reorg deeper than the blocks kept cannot be reconciled: the records of orphaned blocks already
dropped from memory cannot be retracted. ``ChainFollower`` then raises ``ReorgTooDeep`` (one line)
carrying a ``reorg_too_deep`` dead letter for each block of the new branch it fetched, and leaves
the state as it was: restarting with a larger ``--reorg-depth`` or from a fresh checkpoint is the
operator's decision, never taken quietly.

**Finality.** Every record carries a status given when it is emitted: ``finalized`` at or below
the finalized height, ``safe`` at or below the safe height, otherwise ``latest``. The heights are
the node's ``finalized`` and ``safe`` block tags where it answers them; otherwise the depth rule:
a block ``finalized_depth`` (64, two epochs) or more below the node's head is finalized, one
``safe_depth`` (32, one epoch) or more below it is safe. Heights never go down. A status is not
re-emitted when it later upgrades: a consumer knows every record at or below ``finalized_up_to``
(reported by the follower and kept in the checkpoint) is final, whatever status it was emitted
with, and re-emitting every block twice more would triple the topics for no new fact. Should a
reorg orphan a block emitted as finalized (the node's finality broke, or the depth rule was too
short for the chain) it is still retracted, logged as an error and counted.

**Checkpoints.** ``FollowerState.save``/``load`` keep the state in a JSON file, written
atomically; the collector writes it only after Kafka has acknowledged every record of the step,
so a restarted collector resumes at the next block, still retracts what it emitted before the
restart, and numbers a restored block's publication after the ones it published before. A step
published again after a crash (before its checkpoint) carries the same numbers: copies.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Protocol, Sequence

from io_connectors.atomic_files import write_atomically
from io_connectors.chain_options import DEFAULT_FINALIZED_DEPTH, DEFAULT_REORG_DEPTH, DEFAULT_SAFE_DEPTH
from io_connectors.ethereum_rpc import (
    MalformedResponse,
    NodeError,
    UnreadableRecord,
    block_row,
    parse_quantity,
    transfer_rows,
)
from transforms.dead_letter import dead_letter

log = logging.getLogger("cryptobeam.collect")

LATEST, SAFE, FINALIZED = "latest", "safe", "finalized"
BLOCK, TOKEN_TRANSFER, DEAD_LETTER = "block", "token_transfer", "dead_letter"
"""Kinds of events: the name of the schema each one's record is written with."""
DEFAULT_BLOCKS_PER_STEP = 100
CHECKPOINT_FORMAT = 1
STAGE = "collect"


class ReorgTooDeep(RuntimeError):
    """The node's chain forks below the oldest kept block: what was emitted cannot all be retracted."""

    def __init__(self, message: str, dead_letters: Sequence[dict] = ()):
        super().__init__(message)
        self.dead_letters = list(dead_letters)


class NotConnected(ValueError):
    """A block given to ``apply`` neither extends, repeats nor replaces part of the kept chain."""


class NodeInconsistent(RuntimeError):
    """The node answered something that contradicts its other answers (a parent it does not know,
    a block that is not the one asked for); the step is repeated, as for a node that is down."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; one line."""


class UnreadableAnswer(RuntimeError):
    """A node's answer the follower cannot use (after the client's own retries); ``dead_letter``
    holds it. Nothing was applied: the step is repeated later."""

    def __init__(self, message: str, dead_letter: dict):
        super().__init__(message)
        self.dead_letter = dead_letter


class ChainNode(Protocol):
    """What the follower asks of a node: ``io_connectors.ethereum_rpc.EthereumRpc``'s methods, which
    answer with the node's JSON."""

    def block_number(self) -> int: ...

    def blocks_by_number(self, blocks: Sequence[int | str]) -> list[dict | None]:
        """Blocks by height or by tag (``"safe"``, ``"finalized"``); None where the node has none."""

    def block_by_hash(self, block_hash: str) -> dict | None: ...

    def transfer_logs_of_block(self, block_hash: str) -> list[dict]:
        """The Transfer logs of the block with this hash."""


@dataclass(frozen=True)
class ChainEvent:
    kind: str  # BLOCK, TOKEN_TRANSFER or DEAD_LETTER
    record: dict


@dataclass
class ChainCounters:
    """What a follower did. Every record read becomes exactly one outcome:
    ``blocks_read + transfers_read + logs_rejected + malformed_responses
    == blocks_published + transfers_published + duplicates + dead_letters``.
    Retractions are published besides and withdraw published records: net = published - retracted."""

    blocks_read: int = 0
    transfers_read: int = 0
    logs_rejected: int = 0  # logs the node client read as no ERC-20 transfer, each a dead letter
    malformed_responses: int = 0  # node answers that could not be read, each a dead letter
    blocks_published: int = 0
    transfers_published: int = 0
    duplicates: int = 0  # records of a block applied again (a repeated poll)
    dead_letters: int = 0
    blocks_retracted: int = 0
    transfers_retracted: int = 0
    reorgs: int = 0
    deepest_reorg: int = 0  # blocks orphaned by the deepest reorg
    finalized_retracted: int = 0  # records retracted although emitted as finalized
    gap_blocks: int = 0  # blocks fetched beyond the first new one of a step: the head had jumped
    stale_heads: int = 0  # polls where the node's head was below a block already followed
    node_retries: int = 0
    undelivered: int = 0
    checkpoints: int = 0

    LABELS = {
        "blocks_read": "blocks read",
        "transfers_read": "token transfers read",
        "logs_rejected": "logs not ERC-20 transfers",
        "malformed_responses": "malformed node answers",
        "blocks_published": "blocks published",
        "transfers_published": "token transfers published",
        "duplicates": "duplicates dropped",
        "dead_letters": "dead letters",
        "blocks_retracted": "blocks retracted",
        "transfers_retracted": "token transfers retracted",
        "reorgs": "reorgs",
        "deepest_reorg": "deepest reorg (blocks)",
        "finalized_retracted": "finalized records retracted",
        "gap_blocks": "blocks fetched after a head jump",
        "stale_heads": "polls with the head behind",
        "node_retries": "node retries",
        "undelivered": "undelivered to Kafka",
        "checkpoints": "checkpoints written",
    }

    @property
    def read(self) -> int:
        return self.blocks_read + self.transfers_read + self.logs_rejected + self.malformed_responses

    @property
    def published(self) -> int:
        return self.blocks_published + self.transfers_published

    @property
    def retracted(self) -> int:
        return self.blocks_retracted + self.transfers_retracted

    @property
    def reconciles(self) -> bool:
        return self.read == self.published + self.duplicates + self.dead_letters

    def rows(self) -> list[tuple[str, int]]:
        return [(self.LABELS[f.name], getattr(self, f.name)) for f in fields(self)]


@dataclass
class KeptBlock:
    number: int
    hash: str
    block: dict | None  # the row emitted for it; None for the anchor, whose records are not kept
    transfers: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Withdrawn:
    """An orphaned block's hash and the publication of its records last retracted."""

    number: int
    publication: int


def _flagged(row: dict, status: str, retracted: bool, publication: int) -> dict:
    return {**row, "status": status, "retracted": retracted, "publication": publication}


class FollowerState:
    """The recent canonical chain and the pure rules that extend it; see the module's docstring."""

    def __init__(
        self,
        chain: str = "ethereum",
        reorg_depth: int = DEFAULT_REORG_DEPTH,
        safe_depth: int = DEFAULT_SAFE_DEPTH,
        finalized_depth: int = DEFAULT_FINALIZED_DEPTH,
        source: str = "",
    ):
        if reorg_depth < 1:
            raise ValueError("the reorg depth must be at least 1")
        if not 0 <= safe_depth <= finalized_depth:
            raise ValueError("the depths need 0 <= safe depth <= finalized depth")
        self.chain, self.reorg_depth, self.source = chain, reorg_depth, source or chain
        self.safe_depth, self.finalized_depth = safe_depth, finalized_depth
        self.safe_height = self.finalized_height = -1
        self.counts = ChainCounters()
        self._kept: list[KeptBlock] = []
        self._withdrawn: dict[str, Withdrawn] = {}  # by block hash

    # -- the kept chain --------------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return not self._kept

    @property
    def tip(self) -> int | None:
        return self._kept[-1].number if self._kept else None

    @property
    def anchor(self) -> int | None:
        """The lowest kept height: a fork below it cannot be reconciled."""
        return self._kept[0].number if self._kept else None

    def withdrawn_publication(self, block_hash: str) -> int | None:
        """The publication of an orphaned block's records last retracted; None if not retracted (or
        below the kept blocks)."""
        withdrawn = self._withdrawn.get(block_hash)
        return None if withdrawn is None else withdrawn.publication

    def hash_at(self, number: int) -> str | None:
        kept = self._kept_at(number)
        return kept.hash if kept is not None else None

    def connects(self, block: dict) -> bool:
        """The block can be applied: its parent is kept (or nothing is kept yet)."""
        if not self._kept:
            return True
        parent = self._kept_at(block["number"] - 1)
        return parent is not None and parent.hash == block["parent_hash"]

    def canonical_blocks(self) -> list[dict]:
        """The rows emitted for the kept blocks, oldest first (the anchor has none)."""
        return [kept.block for kept in self._kept if kept.block is not None]

    @property
    def followed(self) -> bool:
        """Some block was emitted (and is kept): the state is past its start."""
        return bool(self._kept) and self._kept[-1].block is not None

    def _kept_at(self, number: int) -> KeptBlock | None:
        if not self._kept:
            return None
        index = number - self._kept[0].number
        return self._kept[index] if 0 <= index < len(self._kept) else None

    def set_anchor(self, block: dict) -> None:
        """Start an empty state below its first block: the block's hash is kept, nothing is emitted,
        so a reorg replacing the first emitted blocks is still reconciled."""
        if self._kept:
            raise ValueError("only an empty state takes an anchor")
        self._kept.append(KeptBlock(block["number"], block["hash"], None))

    # -- finality --------------------------------------------------------------------------------

    def note_finality(self, head: int, safe: int | None = None, finalized: int | None = None) -> None:
        """The node's head and its safe/finalized heights (None where it does not answer them: the
        depth rule then gives them). Heights only go up."""
        if finalized is None:
            finalized = head - self.finalized_depth
        if safe is None:
            safe = head - self.safe_depth
        self.finalized_height = max(self.finalized_height, finalized)
        self.safe_height = max(self.safe_height, safe, self.finalized_height)

    def status_of(self, number: int) -> str:
        if number <= self.finalized_height:
            return FINALIZED
        return SAFE if number <= self.safe_height else LATEST

    @property
    def finalized_up_to(self) -> int | None:
        """Every record emitted at or below this height is final; None before the first."""
        if not self._kept:
            return None
        height = min(self.finalized_height, self._kept[-1].number)
        return height if height >= 0 else None

    # -- the rules -------------------------------------------------------------------------------

    def apply(self, block: dict, transfers: Sequence[dict] = (), dead_letters: Sequence[dict] = ()) -> list[ChainEvent]:
        """One block with its token transfers (and the dead letters of its other logs) -> events."""
        number, block_hash = block["number"], block["hash"]
        if self._kept:
            tip, anchor = self._kept[-1].number, self._kept[0].number
            if number > tip + 1:
                raise NotConnected(f"block {number} is past the tip {tip} + 1: the blocks between must come first")
            if number <= anchor and self.hash_at(number) != block_hash:
                self.counts.blocks_read += 1
                self.counts.dead_letters += 1
                raise ReorgTooDeep(
                    f"{self.chain}: block {number} ({block_hash}) replaces a block at or below the oldest kept "
                    f"height {anchor}: the reorg is deeper than the {self.reorg_depth} blocks kept",
                    [self.too_deep_dead_letter(block, anchor)],
                )
            if self.hash_at(number) != block_hash and not self.connects(block):
                raise NotConnected(
                    f"block {number} ({block_hash}) has parent {block['parent_hash']}, not the kept "
                    f"{self.hash_at(number - 1)}: its ancestors must come first"
                )
        counts = self.counts
        counts.blocks_read += 1
        counts.transfers_read += len(transfers)
        counts.logs_rejected += len(dead_letters)
        if self.hash_at(number) == block_hash:
            counts.duplicates += 1 + len(transfers) + len(dead_letters)
            return []
        events = self._retract_from(number) if self._kept and number <= self._kept[-1].number else []
        return events + self._emit(block, transfers, dead_letters)

    def _retract_from(self, number: int) -> list[ChainEvent]:
        index = number - self._kept[0].number
        orphaned, self._kept = self._kept[index:], self._kept[:index]
        counts = self.counts
        counts.reorgs += 1
        counts.deepest_reorg = max(counts.deepest_reorg, len(orphaned))
        log.warning(
            "%s: reorg: %d block(s) from height %d orphaned (%s ... %s); retracting their records",
            self.chain,
            len(orphaned),
            number,
            orphaned[0].hash,
            orphaned[-1].hash,
        )
        events = []
        for kept in reversed(orphaned):
            events += [ChainEvent(TOKEN_TRANSFER, {**row, "retracted": True}) for row in reversed(kept.transfers)]
            events.append(ChainEvent(BLOCK, {**kept.block, "retracted": True}))
            self._withdrawn[kept.hash] = Withdrawn(kept.number, kept.block["publication"])
            counts.transfers_retracted += len(kept.transfers)
            counts.blocks_retracted += 1
            if kept.block["status"] == FINALIZED:
                counts.finalized_retracted += 1 + len(kept.transfers)
                log.error(
                    "%s: block %d (%s) was emitted as finalized and is now orphaned", self.chain, kept.number, kept.hash
                )
        return events

    def _emit(self, block: dict, transfers: Sequence[dict], dead_letters: Sequence[dict]) -> list[ChainEvent]:
        status = self.status_of(block["number"])
        withdrawn = self._withdrawn.pop(block["hash"], None)
        publication = 0 if withdrawn is None else withdrawn.publication + 1
        block_row = _flagged(block, status, False, publication)
        own, letters = [], list(dead_letters)
        for row in sorted(transfers, key=lambda t: t["log_index"]):
            if row["block_hash"] == block["hash"] and row["block_number"] == block["number"]:
                own.append(_flagged(row, status, False, publication))
            else:
                letters.append(
                    dead_letter(
                        "transfer_not_in_block",
                        f"the node gave this transfer for block {block['number']} ({block['hash']})",
                        STAGE,
                        row,
                        self.source,
                        exchange=self.chain,
                        event_time=row.get("event_time"),
                    )
                )
        self._kept.append(KeptBlock(block["number"], block["hash"], block_row, own))
        self._prune()
        counts = self.counts
        counts.blocks_published += 1
        counts.transfers_published += len(own)
        counts.dead_letters += len(letters)
        return (
            [ChainEvent(BLOCK, block_row)]
            + [ChainEvent(TOKEN_TRANSFER, row) for row in own]
            + [ChainEvent(DEAD_LETTER, letter) for letter in letters]
        )

    def _prune(self) -> None:
        excess = len(self._kept) - (self.reorg_depth + 1)
        if excess > 0:
            del self._kept[:excess]
            anchor = self._kept[0]
            anchor.block, anchor.transfers = None, []
        if self._withdrawn and self._kept:
            # A block at or below the anchor's height cannot come back: its fork would be too deep.
            anchor_height = self._kept[0].number
            self._withdrawn = {h: w for h, w in self._withdrawn.items() if w.number > anchor_height}

    def too_deep_dead_letter(self, block: dict, anchor: int) -> dict:
        return dead_letter(
            "reorg_too_deep",
            f"block {block['number']} belongs to a fork below the oldest kept height {anchor} "
            f"(reorg depth {self.reorg_depth}); it cannot be placed without retracting records no longer kept",
            STAGE,
            block,
            self.source,
            source_offset=block["number"],
            exchange=self.chain,
            event_time=block.get("event_time"),
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "chain": self.chain,
            "reorg_depth": self.reorg_depth,
            "safe_height": self.safe_height,
            "finalized_height": self.finalized_height,
            "finalized_up_to": self.finalized_up_to,
            "tip": self.tip,
            "blocks": [
                {"number": k.number, "hash": k.hash, "block": k.block, "transfers": k.transfers} for k in self._kept
            ],
            "withdrawn": [
                {"hash": block_hash, "number": w.number, "publication": w.publication}
                for block_hash, w in self._withdrawn.items()
            ],
        }

    def restore(self, document: dict) -> None:
        """Take a checkpoint's chain and finality heights; this state's depths apply from now on."""
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a chain follower checkpoint of format {CHECKPOINT_FORMAT}")
        if document.get("chain") != self.chain:
            raise CheckpointError(f"the checkpoint follows {document.get('chain')!r}, not {self.chain!r}")
        try:
            kept = [
                KeptBlock(
                    b["number"],
                    b["hash"],
                    b["block"],
                    b["transfers"],
                )
                for b in document["blocks"]
            ]
            withdrawn = {w["hash"]: Withdrawn(int(w["number"]), int(w["publication"])) for w in document["withdrawn"]}
            safe, finalized = int(document["safe_height"]), int(document["finalized_height"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"the checkpoint is damaged: {type(error).__name__}: {error}") from None
        for below, above in zip(kept, kept[1:]):
            if above.number != below.number + 1 or (above.block and above.block["parent_hash"] != below.hash):
                raise CheckpointError(f"the checkpoint's blocks do not form a chain at height {above.number}")
        self._kept, self._withdrawn, self.safe_height, self.finalized_height = kept, withdrawn, safe, finalized
        self._prune()

    def save(self, path: str) -> None:
        write_atomically(json.dumps(self.to_json()).encode(), os.path.abspath(path), durable=True)
        self.counts.checkpoints += 1

    def load(self, path: str) -> bool:
        """Restore from the file if it exists; whether it did."""
        try:
            with open(path, "rb") as handle:
                document = json.loads(handle.read())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
        self.restore(document)
        return True


class ChainFollower:
    """Polls ``node`` and applies what it finds to ``state``; see the module's docstring."""

    def __init__(
        self,
        node: ChainNode,
        state: FollowerState,
        start_block: int | None = None,
        max_blocks_per_step: int = DEFAULT_BLOCKS_PER_STEP,
        use_finality_tags: bool = True,
    ):
        if max_blocks_per_step < 1:
            raise ValueError("a step takes at least one block")
        self.node, self.state, self.start_block = node, state, start_block
        self.max_blocks_per_step = max_blocks_per_step
        self.source = getattr(node, "where", None) or state.source
        self._tags = use_finality_tags  # turned off for good once the node refuses them
        self.head: int | None = None  # the node's head at the last step

    @property
    def caught_up(self) -> bool:
        """The last step reached the node's head: the next block is not there yet."""
        tip = self.state.tip
        return self.head is None or (tip is not None and tip >= self.head)

    def step(self, until_block: int | None = None) -> list[ChainEvent]:
        """One poll: the events of every block new since the last one (none if nothing changed).
        Raises what the node raised, ``NodeInconsistent`` or ``UnreadableAnswer`` having applied
        nothing; ``ReorgTooDeep`` having applied nothing either."""
        try:
            return self._step(until_block)
        except MalformedResponse as error:
            raise self._unreadable(str(error), "malformed_response", error.payload) from None

    def _step(self, until_block: int | None) -> list[ChainEvent]:
        node, state = self.node, self.state
        head = self.head = node.block_number()
        state.note_finality(head, *self._finality_tags())
        if state.empty:
            start = head if self.start_block is None else self.start_block
            if start > head:
                return []
            if start > 0:
                state.set_anchor(self._block_at(start - 1))
        tip = state.tip
        next_height = tip + 1 if tip is not None else self.start_block or 0
        target = min(head, next_height - 1 + self.max_blocks_per_step)
        if until_block is not None:
            target = min(target, until_block)
        if target < 0:
            return []
        newest = self._block_at(target)
        if state.hash_at(target) == newest["hash"]:
            if tip is not None and target < tip and target == head:
                state.counts.stale_heads += 1
            return []
        branch = self._branch_down_to_kept(newest, next_height)
        with_transfers = [(block, *self._transfers(block)) for block in branch]
        if state.followed:  # catching up from the start block is no jump of the head
            state.counts.gap_blocks += max(0, newest["number"] - next_height)
        events: list[ChainEvent] = []
        for block, transfers, dead_letters in with_transfers:
            events += state.apply(block, transfers, dead_letters)
        return events

    def _finality_tags(self) -> tuple[int | None, int | None]:
        if not self._tags:
            return None, None
        try:
            answers = self.node.blocks_by_number(["safe", "finalized"])
        except NodeError as error:
            self._tags = False
            log.info("the node does not answer the safe/finalized tags (%s); finality by depth from now on", error)
            return None, None
        heights = []
        for tag, answer in zip(("safe", "finalized"), answers):
            try:
                heights.append(None if answer is None else parse_quantity(answer.get("number"), f"{tag} number"))
            except (MalformedResponse, AttributeError):
                heights.append(None)  # this poll falls back on the depth rule
        return heights[0], heights[1]

    def _rows(self, answers: Sequence[dict | None]) -> list[dict | None]:
        rows = []
        for answer in answers:
            try:
                rows.append(None if answer is None else block_row(answer))
            except UnreadableRecord as error:
                raise self._unreadable(f"a block from the node: {error}", error.reason, answer) from None
        return rows

    def _block_at(self, number: int) -> dict:
        (block,) = self._rows(self.node.blocks_by_number([number]))
        if block is None or block["number"] != number:
            raise NodeInconsistent(f"the node gives no block at height {number}, at or below its head")
        return block

    def _branch_down_to_kept(self, newest: dict, next_height: int) -> list[dict]:
        """``newest`` and its ancestors back to (not including) the kept chain, oldest first."""
        state = self.state
        branch, by_hash = [newest], {}
        while not self._starts_branch(branch[0]):
            child = branch[0]
            parent_height = child["number"] - 1
            if state.anchor is not None and parent_height < state.anchor:
                raise self._too_deep(branch)
            parent = by_hash.get(child["parent_hash"])
            if parent is None and parent_height >= next_height:
                lowest = max(next_height, parent_height - self.max_blocks_per_step + 1)
                for block in self._rows(self.node.blocks_by_number(list(range(lowest, parent_height + 1)))):
                    if block is not None:
                        by_hash[block["hash"]] = block
                parent = by_hash.get(child["parent_hash"])
            if parent is None:
                (parent,) = self._rows([self.node.block_by_hash(child["parent_hash"])])
            if parent is None or parent["hash"] != child["parent_hash"] or parent["number"] != parent_height:
                raise NodeInconsistent(
                    f"the node does not give the parent {child['parent_hash']} of block {child['number']}"
                )
            branch.insert(0, parent)
        return branch

    def _starts_branch(self, block: dict) -> bool:
        state = self.state
        if state.empty:
            return block["number"] <= (self.start_block or 0)
        return state.connects(block)

    def _too_deep(self, branch: list[dict]) -> ReorgTooDeep:
        state = self.state
        letters = [state.too_deep_dead_letter(block, state.anchor) for block in branch]
        state.counts.blocks_read += len(letters)
        state.counts.dead_letters += len(letters)
        return ReorgTooDeep(
            f"{state.chain}: the node's chain at height {branch[-1]['number']} forks below height {state.anchor}, "
            f"deeper than the {state.reorg_depth} blocks kept; {len(letters)} fetched block(s) dead-lettered, "
            f"nothing retracted",
            letters,
        )

    def _transfers(self, block: dict) -> tuple[list[dict], list[dict]]:
        logs = self.node.transfer_logs_of_block(block["hash"])
        return transfer_rows(logs, {block["hash"]: block["timestamp"]}, self.source)

    def _unreadable(self, message: str, reason: str, payload) -> UnreadableAnswer:
        counts = self.state.counts
        counts.malformed_responses += 1
        counts.dead_letters += 1
        letter = dead_letter(reason, message, STAGE, payload, self.source, exchange=self.state.chain)
        return UnreadableAnswer(f"{self.state.chain}: {message}", letter)
