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


def join_blocks(transfers: pa.Table, lookup: pa.Table) -> JoinedTransfers:
    """The transfers (a table with the ``token_transfer`` columns) with block hash, time, event time
    and transfer id taken from the run's blocks where they lack them, and every transfer the blocks
    contradict or cannot complete rejected (see the module's table). Rows keep their order."""
    n = transfers.num_rows
    given_hash = pc.is_valid(transfers.column("block_hash")).to_numpy(zero_copy_only=False)
    given_time = pc.is_valid(transfers.column("block_timestamp")).to_numpy(zero_copy_only=False)
    if not n or (not lookup.num_rows and given_hash.all() and given_time.all()):
        return JoinedTransfers(transfers, np.zeros(0, np.int64), [], [])
    keys = pl.from_arrow(transfers.select(["chain", "block_number", "block_hash"])).with_row_index("row")
    blocks = pl.from_arrow(lookup)
    by_hash = keys.join(
        blocks.select("chain", "hash", pl.col("number").alias("hash_number"), pl.col("timestamp").alias("hash_time")),
        left_on=["chain", "block_hash"],
        right_on=["chain", "hash"],
        how="left",
        maintain_order="left",
    )
    at_height = blocks.group_by(["chain", "number"]).agg(
        pl.col("hash").first().alias("height_hash"),
        pl.col("timestamp").first().alias("height_time"),
        pl.col("branches").first(),
    )
    by_height = keys.join(
        at_height, left_on=["chain", "block_number"], right_on=["chain", "number"], how="left", maintain_order="left"
    )
    hash_number = _numpy(by_hash["hash_number"])
    hash_found = ~np.isnan(hash_number)
    branches = np.nan_to_num(_numpy(by_height["branches"]), nan=0).astype(np.int64)
    at_a_height = branches > 0
    number = pc.fill_null(transfers.column("block_number"), -1).to_numpy(zero_copy_only=False)
    own_time = pc.fill_null(transfers.column("block_timestamp"), -1).to_numpy(zero_copy_only=False)

    # Where each transfer's block is, by its own hash or else by its height (one branch only).
    use_height = ~given_hash & (branches == 1)
    block_time = np.where(hash_found, _numpy(by_hash["hash_time"]), _numpy(by_height["height_time"]))
    block_time = np.nan_to_num(block_time, nan=-1).astype(np.int64)
    found = hash_found | use_height
    reason = np.full(n, "", dtype=object)
    reason[~given_hash & ~at_a_height] = NOT_FOUND
    reason[~given_hash & (branches > 1)] = AMBIGUOUS
    reason[given_hash & ~hash_found & at_a_height] = MISMATCH
    reason[given_hash & ~hash_found & ~at_a_height & ~given_time] = NOT_FOUND
    wrong_number = hash_found & (np.nan_to_num(hash_number, nan=-1).astype(np.int64) != number)
    wrong_time = found & given_time & (own_time != block_time)
    reason[(reason == "") & (wrong_number | wrong_time)] = MISMATCH

    rejected = np.flatnonzero(reason != "")
    height_hashes = by_height["height_hash"].to_arrow().cast(pa.string())
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


def _numpy(series: pl.Series) -> np.ndarray:
    """A nullable integer column as float64 with NaN for null (block numbers and times are far
    below 2**53, so exact)."""
    return series.cast(pl.Float64).fill_null(float("nan")).to_numpy()


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
