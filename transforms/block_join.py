"""Blocks beside token transfers: ``ethereumetl export_token_transfers`` writes no block hash or
time, so a run given the blocks export too takes them from its blocks by (chain, block number),
in bulk, before the transfers are validated.

The run's blocks are settled into one lookup first:

- A block record is (chain, hash, publication, retracted): a copy of one is a duplicate; a copy
  differing in content (number, parent hash, time, miner, gas, base fee, transaction count; not
  ``status``) is a ``conflicting_duplicate`` dead letter, and the earliest by file and line is
  kept. Every block record kept is used: it is in the lookup, or withdrawn from it.
- A retraction (``retracted`` true) withdraws its publication of the block; a block is live when
  its latest publication is not withdrawn. A height with two live blocks (two branches) is
  ambiguous for a transfer that names no block hash.

Then each transfer:

| the transfer has | the run's blocks at its height | it becomes |
| --- | --- | --- |
| no block hash | none | ``block_not_found`` dead letter |
| no block hash | two branches | ``block_ambiguous`` dead letter |
| no block hash | one block | that block's hash and time (a time of its own must agree) |
| a block hash | that block | checked: number and time must agree; a missing time is taken |
| a block hash | another block only | ``block_mismatch`` dead letter |
| a block hash and time | none | left as it is: complete without the blocks |
| a block hash, no time | none | ``block_not_found`` dead letter |

Any disagreement (number, hash or time) is a ``block_mismatch``: the two exports describe
different chains, and neither can be trusted over the other. A filled transfer gets its
``event_time`` and ``transfer_id`` from the block's time and hash.

Beam-free; the Beam steps are ``transforms.block_join_steps``.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.dead_letter import dead_letter
from transforms.event_time import micros_to_iso

BLOCK_COUNTERS = "block."
"""Prefix of the blocks' counters: ``records_in``, ``used`` and ``duplicates``, reconciled with
the dead letters (``beam_pipelines.accounting``)."""
BLOCK_FIELDS = arrow_schema("block").names
BLOCK_BATCH_SCHEMA = pa.schema(
    list(arrow_schema("block"))
    + [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_offset", pa.int64()),
        pa.field("payload", pa.binary()),
    ]
)
"""Parsed blocks as they leave the parser: the record, where it came from and its original bytes."""
LOOKUP_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string()),
        pa.field("number", pa.int64()),
        pa.field("hash", pa.string()),
        pa.field("timestamp", pa.int64()),
        pa.field("branches", pa.int64()),
    ]
)
"""What the transfers are joined with: each live block, and how many live blocks share its height."""
_IDENTITY = ("chain", "hash", "publication", "retracted")
_CONTENT = (
    "number",
    "parent_hash",
    "timestamp",
    "miner",
    "gas_used",
    "gas_limit",
    "base_fee_per_gas",
    "transaction_count",
)
NOT_FOUND, AMBIGUOUS, MISMATCH = "block_not_found", "block_ambiguous", "block_mismatch"


def with_block_provenance(blocks: pa.Table, source: str, offsets, payloads) -> pa.Table:
    """A ``block`` table (columns by name) with where each row came from and its original bytes."""
    n = blocks.num_rows
    columns = [blocks.column(name) for name in BLOCK_FIELDS]
    columns.append(pa.repeat(pa.scalar(source, pa.string()), n))
    columns.append(pa.array(offsets, pa.int64()))
    columns.append(pa.array(payloads, pa.binary()))
    schema = BLOCK_BATCH_SCHEMA
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


def empty_lookup() -> pa.Table:
    return LOOKUP_SCHEMA.empty_table()


class SettledBlocks:
    """The run's blocks settled: the lookup, and what became of each block record."""

    def __init__(self, lookup: pa.Table, used: int, duplicates: int, dead_letters: list[dict]):
        self.lookup, self.used, self.duplicates, self.dead_letters = lookup, used, duplicates, dead_letters


def settle_blocks(blocks: pa.Table) -> SettledBlocks:
    """The lookup of the run's blocks (``BLOCK_BATCH_SCHEMA`` rows, payload dropped or not), with
    the count of blocks used and of duplicates, and a dead letter per conflicting copy."""
    if not blocks.num_rows:
        return SettledBlocks(empty_lookup(), 0, 0, [])
    frame = pl.from_arrow(blocks.select([*BLOCK_FIELDS, "source", "source_offset"])).with_row_index("row")
    if "publication" not in frame.columns:  # records from before publications: each the first
        frame = frame.with_columns(pl.lit(0, pl.Int64).alias("publication"))
    # The earliest by file and line is the block; later ones are its copies.
    frame = frame.sort(["source", "source_offset", "row"], nulls_last=True)
    same_block = list(_IDENTITY)
    frame = frame.with_columns(pl.int_range(pl.len()).over(same_block).alias("copy"))
    differs = pl.lit(False)
    for name in _CONTENT:
        differs = differs | ~pl.col(name).eq_missing(pl.col(name).first().over(same_block))
    frame = frame.with_columns(differs.alias("differs"))
    kept = frame.filter(pl.col("copy") == 0)
    copies = frame.filter(pl.col("copy") > 0)
    conflicting = copies.filter(pl.col("differs"))
    latest = kept.filter(pl.col("publication") == pl.col("publication").max().over(["chain", "hash"]))
    withdrawn = latest.filter(pl.col("retracted")).select("chain", "hash", "publication")
    live = latest.filter(~pl.col("retracted")).join(withdrawn, on=["chain", "hash", "publication"], how="anti")
    lookup = live.select(
        "chain", "number", "hash", "timestamp", pl.len().over(["chain", "number"]).cast(pl.Int64).alias("branches")
    ).sort(["chain", "number", "hash"])
    lookup = lookup.to_arrow()
    return SettledBlocks(
        pa.Table.from_arrays([lookup.column(f.name).cast(f.type) for f in LOOKUP_SCHEMA], schema=LOOKUP_SCHEMA),
        kept.height,
        copies.height - conflicting.height,
        _conflict_dead_letters(conflicting),
    )


def _conflict_dead_letters(conflicting: pl.DataFrame) -> list[dict]:
    letters = []
    for record in conflicting.select([*BLOCK_FIELDS, "source", "source_offset"]).to_dicts():
        source, offset = record.pop("source"), record.pop("source_offset")
        time_us = record["timestamp"] * 1_000_000
        record["event_time"] = micros_to_iso(time_us)
        letters.append(
            dead_letter(
                "conflicting_duplicate",
                f"block {record['hash']} is read again with other content; the first read is kept",
                "settle_blocks",
                json.dumps(record, sort_keys=True),
                source,
                offset,
                record["chain"],
                None,
                time_us,
            )
        )
    return letters


class JoinedTransfers:
    """Transfers joined with the blocks: the batch with its block columns filled, and the rows
    rejected, each with its reason and what the blocks say."""

    def __init__(self, batch: pa.Table, rejected_rows: np.ndarray, reasons: list[str], messages: list[str]):
        self.batch, self.rejected_rows, self.reasons, self.messages = batch, rejected_rows, reasons, messages


class BlockLookup:
    """A lookup table (``LOOKUP_SCHEMA``) made ready to join batch after batch: its heights as
    sorted arrays per chain (searched, not hashed, per batch), its blocks by hash for the
    transfers that name one."""

    def __init__(self, table: pa.Table):
        self.table = table
        blocks = pl.from_arrow(table).sort(["chain", "number", "hash"])
        self._by_hash = blocks.select(
            "chain", "hash", pl.col("number").alias("hash_number"), pl.col("timestamp").alias("hash_time")
        )
        heights = blocks.unique(["chain", "number"], keep="first", maintain_order=True).with_row_index("at")
        spans = heights.group_by("chain").agg(pl.col("at").min().alias("first"), pl.col("at").max().alias("last"))
        self._chains = {row["chain"]: (row["first"], row["last"] + 1) for row in spans.to_dicts()}
        self._numbers = heights["number"].to_numpy()
        self._hashes = heights["hash"].to_arrow().cast(pa.string())
        self._times = heights["timestamp"].to_numpy()
        self._branches = heights["branches"].to_numpy()

    def __len__(self) -> int:
        return self.table.num_rows

    def heights(self, chains: pa.ChunkedArray, numbers: np.ndarray):
        """(hash, time, branches) of the live blocks at each (chain, number): the first block's
        hash and time where there are several; null, -1 and 0 where there is none."""
        at = np.full(len(numbers), -1, np.int64)
        encoded = pc.dictionary_encode(chains.combine_chunks())
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        for code, chain in enumerate(encoded.dictionary.to_pylist()):
            if chain not in self._chains:
                continue
            first, end = self._chains[chain]
            rows = np.flatnonzero(codes == code)
            place = first + np.searchsorted(self._numbers[first:end], numbers[rows])
            hit = place < end
            hit[hit] = self._numbers[place[hit]] == numbers[rows][hit]
            at[rows[hit]] = place[hit]
        found = at >= 0
        if not found.any():
            return pa.nulls(len(numbers), pa.string()), at, np.zeros(len(numbers), np.int64)
        index = pa.array(np.where(found, at, 0), pa.int64())
        hashes = pc.if_else(pa.array(found), self._hashes.take(index), pa.scalar(None, pa.string()))
        return hashes, np.where(found, self._times[at], -1), np.where(found, self._branches[at], 0)

    def by_hash(self, transfers: pa.Table, given_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(number, time) of the live block each transfer names by hash; -1 where it names none
        or one the lookup lacks."""
        number, seconds = np.full(transfers.num_rows, -1, np.int64), np.full(transfers.num_rows, -1, np.int64)
        if not given_hash.any() or not len(self):
            return number, seconds
        rows = np.flatnonzero(given_hash)
        named = pl.from_arrow(transfers.select(["chain", "block_hash"]).take(pa.array(rows, pa.int64())))
        found = named.join(
            self._by_hash,
            left_on=["chain", "block_hash"],
            right_on=["chain", "hash"],
            how="left",
            maintain_order="left",
        )
        number[rows] = found["hash_number"].fill_null(-1).to_numpy()
        seconds[rows] = found["hash_time"].fill_null(-1).to_numpy()
        return number, seconds


def join_blocks(transfers: pa.Table, lookup: BlockLookup | pa.Table) -> JoinedTransfers:
    """The transfers (a table with the ``token_transfer`` columns) with block hash, time, event time
    and transfer id taken from the run's blocks where they lack them, and every transfer the blocks
    contradict or cannot complete rejected (see the module's table). Rows keep their order."""
    lookup = lookup if isinstance(lookup, BlockLookup) else BlockLookup(lookup)
    n = transfers.num_rows
    given_hash = pc.is_valid(transfers.column("block_hash")).to_numpy(zero_copy_only=False)
    given_time = pc.is_valid(transfers.column("block_timestamp")).to_numpy(zero_copy_only=False)
    if not n or (not len(lookup) and given_hash.all() and given_time.all()):
        return JoinedTransfers(transfers, np.zeros(0, np.int64), [], [])
    number = pc.fill_null(transfers.column("block_number"), -1).to_numpy(zero_copy_only=False)
    own_time = pc.fill_null(transfers.column("block_timestamp"), -1).to_numpy(zero_copy_only=False)
    height_hashes, height_time, branches = lookup.heights(transfers.column("chain"), number)
    hash_number, hash_time = lookup.by_hash(transfers, given_hash)
    hash_found = hash_number >= 0
    at_a_height = branches > 0

    # Where each transfer's block is, by its own hash or else by its height (one branch only).
    use_height = ~given_hash & (branches == 1)
    block_time = np.where(hash_found, hash_time, height_time)
    found = hash_found | use_height
    reason = np.full(n, "", dtype=object)
    reason[~given_hash & ~at_a_height] = NOT_FOUND
    reason[~given_hash & (branches > 1)] = AMBIGUOUS
    reason[given_hash & ~hash_found & at_a_height] = MISMATCH
    reason[given_hash & ~hash_found & ~at_a_height & ~given_time] = NOT_FOUND
    wrong_number = hash_found & (hash_number != number)
    wrong_time = found & given_time & (own_time != block_time)
    reason[(reason == "") & (wrong_number | wrong_time)] = MISMATCH

    rejected = np.flatnonzero(reason != "")
    messages = []
    if len(rejected):
        said = transfers.select(["block_number", "block_hash", "block_timestamp"]).take(pa.array(rejected)).to_pylist()
        heights = height_hashes.take(pa.array(rejected)).to_pylist()
        for k, i in enumerate(rejected.tolist()):
            found_by_hash = (bool(hash_found[i]), hash_number[i])
            messages.append(_message(reason[i], said[k], *found_by_hash, heights[k], block_time[i], branches[i]))
    fill = found & (reason == "") & ~(given_hash & given_time)
    if not fill.any():
        return JoinedTransfers(transfers, rejected, reason[rejected].tolist(), messages)
    mask = pa.array(fill)
    hashes = pc.if_else(pa.array(fill & ~given_hash), height_hashes, transfers.column("block_hash"))
    times = pc.if_else(mask, pa.array(block_time, pa.int64()), transfers.column("block_timestamp"))
    filled = {
        "block_hash": hashes,
        "block_timestamp": times,
        "event_time": pc.multiply(times, 1_000_000).cast(transfers.schema.field("event_time").type),
        "transfer_id": pc.binary_join_element_wise(hashes, transfers.column("log_index").cast(pa.string()), "_"),
    }
    batch = transfers
    for name, values in filled.items():
        at = batch.schema.get_field_index(name)
        batch = batch.set_column(at, batch.schema.field(at), pc.if_else(mask, values, batch.column(name)))
    return JoinedTransfers(batch, rejected, reason[rejected].tolist(), messages)


def _message(reason: str, said: dict, hash_found: bool, hash_number, height_hash, block_time, branches) -> str:
    """Why a transfer was rejected, with what it says and what the run's blocks say."""
    number, own_hash, own_time = said["block_number"], said["block_hash"], said["block_timestamp"]
    if reason == NOT_FOUND:
        return f"block {number} is not among the run's blocks: the transfer's block hash and time cannot be filled in"
    if reason == AMBIGUOUS:
        return f"the run's blocks hold {branches} blocks at height {number}: the transfer names none of them"
    if own_hash is not None and not hash_found:
        return f"the transfer names block {own_hash} at height {number}; the run's blocks have {height_hash} there"
    if own_hash is not None and int(hash_number) != number:
        return f"the transfer puts block {own_hash} at height {number}; the run's blocks at {int(hash_number)}"
    return f"the transfer's block {number} is at {own_time} s; the run's blocks say {int(block_time)} s"
