"""Token transfers: ERC-20 Transfer events (``schemas/token_transfer.avsc``) as a record type of the
event-time skeleton.

- **Event time** is the block timestamp (``event_time`` = ``block_timestamp`` seconds x 10**6).
- **Key** is the chain (with the token standard, ``erc20``). A transfer's id (``transfer_id`` =
  block hash + log index) is unique on its chain, and a chain's transfers of a window are spread
  over thousands of tokens, most with a handful each: keyed per token, every stateful step of the
  skeleton would run once per tiny chunk. Keyed per chain, a window's transfers travel as one
  chunk, and the computations group them by token in bulk (``transforms.token_aggregates``).
- **Identity** is (``transfer_id``, ``publication``, ``retracted``): a retraction (a reorg orphaned
  the transfer's block) is a record of its own, not a copy of what it withdraws; a re-publication
  (a later reorg restored the block) is numbered one more, so it is a new record rather than a
  copy of the publication withdrawn; copies of any of them are duplicates. What a copy must agree
  on (its content) leaves out ``status``: a record re-read once its block is final is the same
  transfer.

Beam-free, like every record type's rules (``transforms.record_types`` imports them as it plans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.arrow_arrays import one_array, one_value
from transforms.dead_letter import batch_rows_dead_letters, record_json
from transforms.row_reasons import FirstReasons

ERC20 = "erc20"
"""The token standard: the second part of the transfers' key. Keys of every record type have the
same shape (two texts), since the in-process runner decodes the timers of a fused stage's
stateful steps with one of their key coders."""
TOKEN_TRANSFER_COUNTERS = "token_transfer."
"""Prefix of the transfers' own counters: they are reconciled apart from trades."""
STATUSES = ("latest", "safe", "finalized")
UINT256_LIMIT = 2**256
UINT256_DIGITS = len(str(UINT256_LIMIT - 1))  # 78
_HASH_SEED = 0x5EED
RETRACTION_MASK = np.uint64(0x9E3779B97F4A7C15)
"""Flips a transfer's id hash into its retraction's: the two are different records to dedupe."""
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

TRANSFER_FIELDS = arrow_schema("token_transfer").names
RECORD_SCHEMA = pa.schema(
    list(arrow_schema("token_transfer"))
    + [pa.field("source", pa.string(), nullable=False), pa.field("source_offset", pa.int64())]
)
"""What a chunk keeps of each transfer: the record and where it came from."""
TRANSFER_BATCH_SCHEMA = pa.schema(list(RECORD_SCHEMA) + [pa.field("payload", pa.binary())])
"""Parsed transfers as they enter the skeleton: the record, where it came from and, until
validation, the original bytes (for dead letters)."""
_CONTENT_FIELDS = (
    "token_address",
    "from_address",
    "to_address",
    "value",
    "transaction_hash",
    "log_index",
    "block_number",
    "block_hash",
    "event_time",
)


def with_provenance(transfers: pa.Table, source: str, offsets=None, payloads=None) -> pa.Table:
    """A batch of the skeleton's shape from a ``token_transfer`` table (its columns by name), with
    where its rows came from; ``offsets`` and ``payloads`` may be None (unknown)."""
    n = transfers.num_rows
    columns = [transfers.column(name) for name in TRANSFER_FIELDS]
    columns.append(pa.repeat(pa.scalar(source, pa.string()), n))
    columns.append(pa.nulls(n, pa.int64()) if offsets is None else pa.array(offsets, pa.int64()))
    columns.append(pa.nulls(n, pa.binary()) if payloads is None else pa.array(payloads, pa.binary()))
    schema = TRANSFER_BATCH_SCHEMA
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


_ALL_TRUE = np.frombuffer(b"\x01" * 8, np.uint64)[0]


def is_lower_hex(values, digits: int) -> np.ndarray:
    """Per row: ``0x`` and ``digits`` lower-case hex digits (``digits`` a multiple of 8). Checked
    on the fixed-width bytes with vectorized arithmetic: a regex over a million addresses costs
    tenfold."""
    values = one_array(values)
    ok = pc.fill_null(pc.equal(pc.binary_length(values), digits + 2), False).to_numpy(zero_copy_only=False)
    if not ok.any():
        return ok
    rows = np.flatnonzero(ok)
    text = _fixed_width_bytes(values if len(rows) == len(values) else values.take(pa.array(rows)), digits + 2)
    hex_digits = text[:, 2:]
    is_digit = ((hex_digits - ord("0")) < 10) | ((hex_digits - ord("a")) < 6)  # uint8: below 0 wraps high
    all_digits = (is_digit.view(np.uint64) == _ALL_TRUE).all(axis=1)  # 8 flags a word: 40 and 64 divide
    ok[rows] = (text[:, 0] == ord("0")) & (text[:, 1] == ord("x")) & all_digits
    return ok


def _is_null(values) -> np.ndarray:
    return pc.is_null(values).to_numpy(zero_copy_only=False)


def invalid_transfer_rows(batch: pa.Table, min_time_us: int, max_time_us: int) -> FirstReasons:
    """The first reason each transfer breaks the chain data contract, in order of precedence.
    Parsers check it already; records from Kafka are checked here as well."""
    reasons = FirstReasons(batch.num_rows)
    chain = batch.column("chain")
    empty = pc.or_kleene(pc.is_null(chain), pc.equal(pc.binary_length(chain), 0))
    reasons.flag(pc.fill_null(empty, True).to_numpy(zero_copy_only=False), "missing_chain")
    for column in ("token_address", "from_address", "to_address"):
        reasons.flag(~is_lower_hex(batch.column(column), 40), "bad_address")
    values = one_array(batch.column("value"))
    digits = pc.fill_null(pc.ascii_is_decimal(values), False).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    leading_zero = pc.fill_null(pc.starts_with(values, "0"), False).to_numpy(zero_copy_only=False)
    reasons.flag(~digits | (lengths > UINT256_DIGITS) | (leading_zero & (lengths > 1)), "bad_value")
    longest = pc.fill_null(pc.equal(pc.binary_length(values), UINT256_DIGITS), False).to_numpy(zero_copy_only=False)
    if longest.any():  # 78 digits: compare with 2**256 as text of the same length
        too_big = pc.fill_null(pc.greater_equal(values, str(UINT256_LIMIT)), False).to_numpy(zero_copy_only=False)
        reasons.flag(longest & too_big, "bad_value")
    reasons.flag(~is_lower_hex(batch.column("transaction_hash"), 64), "bad_hash")
    block_hash = batch.column("block_hash")
    reasons.flag(_is_null(block_hash), "missing_block_hash")
    reasons.flag(~is_lower_hex(block_hash, 64), "bad_hash")
    for column in ("log_index", "block_number"):
        integers = batch.column(column)
        negative = pc.fill_null(pc.less(integers, 0), True).to_numpy(zero_copy_only=False)
        reasons.flag(_is_null(integers) | negative, "malformed")
    times = batch.column("event_time").cast(pa.int64())
    reasons.flag(_is_null(times), "missing_event_time")
    t = pc.fill_null(times, 0).to_numpy(zero_copy_only=False)
    reasons.flag((t < min_time_us) | (t > max_time_us), "timestamp_out_of_range")
    seconds = pc.fill_null(batch.column("block_timestamp"), -1).to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):
        reasons.flag(seconds * 1_000_000 != t, "inconsistent_event_time")
    expected_id = pc.binary_join_element_wise(block_hash, batch.column("log_index").cast(pa.string()), "_")
    same_id = pc.fill_null(pc.equal(batch.column("transfer_id"), expected_id), False)
    reasons.flag(~same_id.to_numpy(zero_copy_only=False), "bad_transfer_id")
    known = pc.fill_null(pc.is_in(batch.column("status"), pa.array(STATUSES)), False)
    reasons.flag(~known.to_numpy(zero_copy_only=False), "unknown_status")
    reasons.flag(_is_null(batch.column("retracted")), "malformed")
    publication = batch.column("publication")
    reasons.flag(pc.fill_null(pc.less(publication, 0), True).to_numpy(zero_copy_only=False), "malformed")
    return reasons


_MESSAGES = {
    "missing_block_hash": "no block hash: an ethereumetl export_token_transfers file must be joined with its blocks",
}


def transfer_dead_letters(
    batch: pa.Table, rows: list[int], reasons: list[str], messages: list[str], stage: str, event_times: list[int | None]
) -> list[dict]:
    """Dead letters of rows of a transfer batch, each with its payload (the normalized record as
    JSON when the original bytes are gone) and where it came from."""
    return batch_rows_dead_letters(
        batch,
        rows,
        reasons,
        messages,
        stage,
        event_times,
        record_fields=TRANSFER_FIELDS,
        time_fields=("event_time",),
        key_fields=("chain", "token_address"),
    )


def rejected_transfer_dead_letters(batch: pa.Table, rejected: list[tuple[int, str]]) -> list[dict]:
    rows, reasons = [i for i, _ in rejected], [reason for _, reason in rejected]
    index = pa.array(rows, pa.int64())
    times = batch.column("event_time").cast(pa.int64()).take(index).to_pylist()
    ids = batch.column("transfer_id").take(index).to_pylist()
    messages = [f"{_MESSAGES.get(reason, reason)}: transfer {tid!r}" for reason, tid in zip(reasons, ids)]
    return transfer_dead_letters(batch, rows, reasons, messages, "validate", times)


def split_by_chain(batch: pa.Table):
    """Yield ((chain, ``ERC20``), that chain's rows); a batch is usually one chain's."""
    if not batch.num_rows:
        return
    chain = batch.column("chain")
    if one_value(chain):
        yield (chain[0].as_py(), ERC20), batch
        return
    encoded = one_array(pc.dictionary_encode(chain))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    for code, name in enumerate(encoded.dictionary.to_pylist()):
        yield (name, ERC20), batch.take(pa.array(np.flatnonzero(codes == code), pa.int64()))


# Not None: dedupe passes a first chunk of distinct ids on whole. What the computations need of a
# chunk is summarized after dedupe, from the transfers it kept.
_SUMMARIZED_AFTER_DEDUPE = ()


@dataclass
class TokenTransferChunk:
    """One chain's transfers of one window: the records (an Arrow table, its own copy so that it
    pickles alone) with what dedupe compares."""

    chain: str
    window_start: int
    records: pa.Table
    """``RECORD_SCHEMA``: the contract's columns, then source and source_offset."""
    event_time: np.ndarray
    id_hash: np.ndarray
    content_hash: np.ndarray
    summary: object = _SUMMARIZED_AFTER_DEDUPE
    distinct_ids: bool = False

    exchange = property(lambda self: self.chain)  # what dedupe names a dead letter's key with
    symbol = None  # a chunk holds many tokens

    def __len__(self) -> int:
        return len(self.event_time)

    @property
    def nbytes(self) -> int:
        return self.records.nbytes + self.event_time.nbytes * 3

    def take(self, rows) -> "TokenTransferChunk":
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return TokenTransferChunk(
            self.chain,
            self.window_start,
            self.records.take(pa.array(rows, pa.int64())),
            self.event_time[rows],
            self.id_hash[rows],
            self.content_hash[rows],
        )

    def source(self, i: int) -> str:
        return self.records.column("source")[i].as_py()

    def offset(self, i: int) -> int | None:
        return self.records.column("source_offset")[i].as_py()

    def trade_record(self, i: int) -> str:
        """The transfer as JSON: the payload of a dead letter raised after validation."""
        record = self.records.slice(i, 1).select(TRANSFER_FIELDS).to_pylist()[0]
        record["event_time"] = int(self.event_time[i])
        return record_json(record, ("event_time",))


def _publication_mix(publication: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer of each publication number: 0 for publication 0 (a first publication's
    hashes are its transfer id's alone), spread over all 64 bits for the others."""
    z = publication.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def transfer_hashes(records: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transfer hash, dedupe id hash, content hash) per row. The transfer hash is of (transfer_id,
    publication): what a retraction is matched with, so a retraction withdraws the publication it
    names and never a later re-publication. The id hash of a retraction is its transfer's flipped,
    so that a transfer and its retraction are two records, and each copy of either shares both
    hashes with it."""
    transfer = pl.from_arrow(one_array(records.column("transfer_id"))).hash(seed=_HASH_SEED).to_numpy()
    publication = one_array(records.column("publication")).to_numpy(zero_copy_only=False)
    if publication.any():
        transfer = transfer ^ _publication_mix(publication)
    retracted = one_array(records.column("retracted")).to_numpy(zero_copy_only=False).astype(bool)
    ids = np.where(retracted, transfer ^ RETRACTION_MASK, transfer)
    content = pl.from_arrow(records.select(list(_CONTENT_FIELDS))).hash_rows(seed=_HASH_SEED).to_numpy()
    return transfer, ids, content


def transfer_chunks_of(batch: pa.Table, window_starts: np.ndarray, key: tuple[str, str]):
    """One chain's transfers cut into one chunk per window start; hashes computed once per batch."""
    chain, _standard = key
    records = batch.select(RECORD_SCHEMA.names)
    times = records.column("event_time").cast(pa.int64()).to_numpy()
    _transfer, ids, content = transfer_hashes(records)
    order = np.argsort(window_starts, kind="stable")
    ordered_starts = window_starts[order]
    boundaries = np.flatnonzero(np.diff(ordered_starts)) + 1
    for rows in np.split(order, boundaries):
        chunk_ids = ids[rows]
        yield TokenTransferChunk(
            chain,
            int(window_starts[rows[0]]),
            records.take(pa.array(rows, pa.int64())),
            times[rows],
            chunk_ids,
            content[rows],
            distinct_ids=len(np.unique(chunk_ids)) == len(chunk_ids),
        )


# --- columns for the computations, in bulk

_NIBBLE = np.zeros(256, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
LIMB_DIGITS = 9
LIMBS = -(-UINT256_DIGITS // LIMB_DIGITS)  # 9 limbs of 9 digits hold 81 >= 78 digits
LIMB_SCALES = [10 ** (LIMB_DIGITS * (LIMBS - 1 - k)) for k in range(LIMBS)]


def _fixed_width_bytes(strings: pa.Array, width: int) -> np.ndarray:
    """A string array whose every value is ``width`` bytes long, as a (rows, width) uint8 view."""
    strings = one_array(strings).cast(pa.string())
    if not len(strings):
        return np.zeros((0, width), np.uint8)
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[strings.offset : strings.offset + len(strings) + 1]
    data = np.frombuffer(strings.buffers()[2], np.uint8)
    return data[offsets[0] : offsets[-1]].reshape(len(strings), width)


def address_bytes(addresses: pa.Array) -> np.ndarray:
    """Validated addresses (0x + 40 lower-case hex digits) as their 20 bytes, dtype S20: exact,
    sortable, and a third of the text's size."""
    hex_digits = _NIBBLE[_fixed_width_bytes(addresses, 42)[:, 2:]]
    raw = (hex_digits[:, 0::2] << 4) | hex_digits[:, 1::2]
    return np.ascontiguousarray(raw).view("S20").ravel()


def address_text(raw: bytes) -> str:
    """An address's 20 bytes (as numpy hands back an S20 value, trailing zero bytes dropped) as text."""
    return "0x" + raw.ljust(20, b"\x00").hex()


def value_limbs(values: pa.Array) -> np.ndarray:
    """Validated uint256 decimal texts as (rows, 9) base-10**9 limbs, most significant first.
    Summing a column of limbs in int64 is exact for up to 9 * 10**9 rows."""
    padded = pc.utf8_lpad(one_array(values), LIMBS * LIMB_DIGITS, "0")
    digits = (_fixed_width_bytes(padded, LIMBS * LIMB_DIGITS) - ord("0")).reshape(-1, LIMBS, LIMB_DIGITS)
    limbs = np.zeros((len(digits), LIMBS), np.int64)
    for position in range(LIMB_DIGITS):  # a digit at a time: no (rows, 81) int64 temporary
        limbs *= 10
        limbs += digits[:, :, position]
    return limbs


def limbs_value(limb_sums) -> int:
    """The exact integer of summed limbs."""
    return sum(int(total) * scale for total, scale in zip(limb_sums, LIMB_SCALES))
