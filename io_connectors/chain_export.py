"""A range of blocks read from an Ethereum node into ethereum-etl's files: ``cryptobeam chain export``.

    OUT/blocks/blocks_N_M.csv                   ethereum-etl's blocks.csv columns
    OUT/token_transfers/token_transfers_N_M.csv ethereum-etl's token_transfers.csv columns, plus
                                                block_hash and block_timestamp
    OUT/dead_letters/dead_letters_N_M.jsonl     schemas/dead_letter.avsc records, one JSON object a
                                                line, payload_bytes in base64 (as BigQuery's JSON has it)

With ``json`` the first two are JSON lines (``.json``, as ethereum-etl names them); integers that
can exceed what a double holds exactly (value, difficulty, total_difficulty) are decimal strings
there, so every JSON reader gets them exact. In CSV every integer is decimal digits, an absent
value is empty, and a block's withdrawals are a JSON array.

The range is read ``batch_blocks`` at a time: the blocks in JSON-RPC batches, then their Transfer
logs with one ``eth_getLogs`` (halved while the node refuses a range as too large). Each file is
written under a hidden temporary name and renamed into place when the whole range is read, so a
failed or interrupted export leaves no partial file under a final name.

Near the head the chain can change while it is read. Each block's parent hash must be the hash of
the block before it, and each log must name the block read at its number; a batch that does not
hold together is read again (its logs by block hash, EIP-234, where only they moved). A block
already written that leaves the chain fails the export (``ChainChanged``): export only up to the
finalized head to rule that out.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from io_connectors.ethereum_rpc import (
    INT64_MAX,
    EthereumRpc,
    MalformedResponse,
    NodeError,
    UnreadableRecord,
    block_row,
    parse_quantity,
    record_dead_letter,
    transfer_rows,
)
from io_connectors.formats.ethereum_etl import BLOCK_EXPORT, TEXT_FORMATS, TRANSFER_COLUMNS_WITH_BLOCK, row_writer
from io_connectors.paths import is_remote

REREADS = 3
"""Reads of a batch that does not hold together (the chain changed while it was read) before the
export gives up."""


class ExportError(Exception):
    """What the user asked cannot be exported as asked (a range beyond the node's head, say); one line."""


class ChainChanged(Exception):
    """The chain changed under the export in a way re-reading cannot mend; one line."""


@dataclass
class ExportResult:
    from_block: int
    to_block: int
    head: int
    finalized: int | None
    blocks_read: int = 0
    blocks: int = 0
    """Blocks written; the others read are dead letters."""
    transfers: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    rereads: int = 0
    retries: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def export_paths(out: str, from_block: int, to_block: int, output_format: str) -> dict[str, str]:
    extension = TEXT_FORMATS[output_format]
    span = f"{from_block}_{to_block}"
    return {
        "blocks": os.path.join(out, "blocks", f"blocks_{span}.{extension}"),
        "token_transfers": os.path.join(out, "token_transfers", f"token_transfers_{span}.{extension}"),
        "dead_letters": os.path.join(out, "dead_letters", f"dead_letters_{span}.jsonl"),
    }


def check_range(from_block: int, to_block: int, batch_blocks: int) -> None:
    if from_block < 0 or to_block < 0:
        raise ExportError("--from-block and --to-block must be block numbers, 0 or more")
    if from_block > to_block:
        raise ExportError(f"--from-block {from_block} is after --to-block {to_block}")
    if to_block > INT64_MAX:
        raise ExportError(f"--to-block {to_block} is beyond any block number")
    if batch_blocks < 1:
        raise ExportError("--batch-blocks must be at least 1")


def export_range(
    client: EthereumRpc,
    from_block: int,
    to_block: int,
    out: str,
    output_format: str = "csv",
    batch_blocks: int = 100,
    on_progress: Callable[[ExportResult], None] | None = None,
) -> ExportResult:
    """Read blocks from_block..to_block (inclusive) and their ERC-20 transfers into ``out``."""
    check_range(from_block, to_block, batch_blocks)
    if output_format not in TEXT_FORMATS:
        raise ExportError(f"unknown format {output_format!r}; choose one of: {', '.join(TEXT_FORMATS)}")
    if is_remote(out):
        raise ExportError(f"chain export writes a local directory, not {out}")
    started = time.monotonic()
    head = client.block_number()
    if to_block > head:
        raise ExportError(f"--to-block {to_block} is beyond the node's head, block {head}")
    result = ExportResult(from_block, to_block, head, _finalized_head(client))
    retried_before = client.on_retry
    client.on_retry = _counting_retries(result, retried_before)
    paths = export_paths(out, from_block, to_block, output_format)
    files: dict[str, _PendingFile] = {}
    try:
        for name, path in paths.items():
            files[name] = _PendingFile(path)
        writers = {
            "blocks": row_writer(files["blocks"].handle, output_format, BLOCK_EXPORT.etl_columns),
            "token_transfers": row_writer(files["token_transfers"].handle, output_format, TRANSFER_COLUMNS_WITH_BLOCK),
        }
        previous_hash = None
        for start in range(from_block, to_block + 1, batch_blocks):
            end = min(start + batch_blocks - 1, to_block)
            blocks, transfers, dead = _read_batch(client, start, end, previous_hash, result)
            for block in blocks:
                writers["blocks"](_etl_block(block))
            for transfer in transfers:
                writers["token_transfers"](_etl_transfer(transfer))
            for letter in dead:
                files["dead_letters"].handle.write(_dead_letter_line(letter))
                result.dead_letters[letter["reason"]] += 1
            previous_hash = _readable_hash(blocks, end)
            result.blocks_read += end - start + 1
            result.blocks += sum(1 for block in blocks if block["_row"] is not None)
            result.transfers += len(transfers)
            if on_progress is not None:
                on_progress(result)
        for pending in files.values():
            pending.commit()
        result.files = list(paths.values())
    finally:
        client.on_retry = retried_before
        for pending in files.values():
            pending.discard()
    result.seconds = time.monotonic() - started
    return result


def _counting_retries(result: ExportResult, also: Callable | None):
    def on_retry(attempt: int, problem: str) -> None:
        result.retries += 1
        if also is not None:
            also(attempt, problem)

    return on_retry


def _finalized_head(client: EthereumRpc) -> int | None:
    """The node's finalized block, or None for a node that has no such tag (before the merge)."""
    try:
        (block,) = client.blocks_by_number(["finalized"])
        return None if block is None else parse_quantity(block.get("number"), "number", INT64_MAX + 1)
    except (NodeError, MalformedResponse):
        return None


def _readable_hash(blocks: list[dict], number: int) -> str | None:
    for block in blocks:
        if block["_row"] is not None and block["_row"]["number"] == number:
            return block["_row"]["hash"]
    return None


def _read_batch(client: EthereumRpc, start: int, end: int, previous_hash: str | None, result: ExportResult):
    """(blocks, transfer rows, dead letters) of blocks start..end, read until they hold together."""
    source = f"{client.where} eth_getBlockByNumber"
    problem = ""
    for attempt in range(REREADS):
        if attempt:
            result.rereads += 1
        node_blocks = client.blocks_by_number(range(start, end + 1))
        missing = [start + i for i, block in enumerate(node_blocks) if block is None]
        if missing:
            raise ExportError(f"the node has no block {missing[0]} (its head was {result.head})")
        blocks, dead = [], []
        for number, node_block in zip(range(start, end + 1), node_blocks):
            try:
                row = block_row(node_block, "latest")
                if row["number"] != number:
                    raise UnreadableRecord(
                        "malformed", f"asked for block {number}, the node sent block {row['number']}"
                    )
            except UnreadableRecord as error:
                dead.append(record_dead_letter(error, node_block, source, number))
                row = None
            blocks.append({"_row": row, "_node": node_block})
        broken = _break_in_chain(blocks, start, previous_hash)
        if broken is not None:
            problem = f"block {broken}'s parent is not the block read before it"
            if broken == start and attempt + 1 == REREADS:
                raise ChainChanged(
                    f"block {start - 1}, already exported, left the chain while the export ran; "
                    "export up to the finalized head to avoid this"
                    + (f" (block {result.finalized} when the export began)" if result.finalized is not None else "")
                )
            continue
        hashes = {block["_row"]["number"]: block["_row"]["hash"] for block in blocks if block["_row"] is not None}
        try:
            logs = _logs_matching(client, start, end, hashes)
        except NodeError as error:  # a block read moments ago is gone: the chain changed
            problem = str(error)
            continue
        timestamps = {block["_row"]["hash"]: block["_row"]["timestamp"] for block in blocks if block["_row"]}
        transfers, unreadable = transfer_rows(logs, timestamps, f"{client.where} eth_getLogs")
        transfers.sort(key=lambda row: (row["block_number"], row["log_index"]))
        return blocks, transfers, dead + unreadable
    raise ChainChanged(
        f"blocks {start}..{end} changed each of the {REREADS} times they were read ({problem}); "
        "export up to the finalized head to avoid this"
    )


def _break_in_chain(blocks: list[dict], start: int, previous_hash: str | None) -> int | None:
    """The first block number whose parent hash is not the hash read for the block before it."""
    before = previous_hash
    for offset, block in enumerate(blocks):
        row = block["_row"]
        if row is not None and before is not None and row["parent_hash"] != before:
            return start + offset
        before = None if row is None else row["hash"]
    return None


def _logs_matching(client: EthereumRpc, start: int, end: int, hashes: dict[int, str]) -> list[dict]:
    """The Transfer logs of start..end, each of the block read at its number: a log of another block
    at that number (the range moved to another branch between the reads) is replaced by the logs
    of the block read, asked for by its hash. A NodeError here means that block is gone."""
    logs = _logs_of_range(client, start, end)
    moved = set()
    for entry in logs:
        number = _block_number_of(entry)
        if number in hashes and str(entry.get("blockHash", "")).lower() != hashes[number]:
            moved.add(number)
    if not moved:
        return logs
    kept = [entry for entry in logs if _block_number_of(entry) not in moved]
    for number in sorted(moved):
        kept += client.transfer_logs_of_block(hashes[number])
    return kept


def _block_number_of(entry) -> int | None:
    try:
        return parse_quantity(entry.get("blockNumber"), "blockNumber", INT64_MAX + 1)
    except (AttributeError, MalformedResponse):
        return None


def _logs_of_range(client: EthereumRpc, start: int, end: int) -> list[dict]:
    """eth_getLogs of start..end, halving a range the node refuses (providers cap the blocks or logs
    of one query); a single block it refuses is its error. At most 2n - 1 queries for n blocks."""
    try:
        return client.transfer_logs(start, end)
    except NodeError:
        if start == end:
            raise
    middle = (start + end) // 2
    return _logs_of_range(client, start, middle) + _logs_of_range(client, middle + 1, end)


# -- ethereum-etl's rows ---------------------------------------------------------------------------


def _hex_int(node: dict, name: str) -> int | None:
    value = node.get(name)
    if value is None:
        return None
    try:
        return parse_quantity(value, name)
    except MalformedResponse:
        return None


def _text(node: dict, name: str) -> str | None:
    value = node.get(name)
    return value.lower() if isinstance(value, str) else None


def _etl_block(block: dict) -> dict | None:
    """A block as ethereum-etl's blocks.csv has it; None for one that could not be read (dead-lettered)."""
    row, node = block["_row"], block["_node"]
    if row is None:
        return None
    withdrawals = node.get("withdrawals")
    return {
        "number": row["number"],
        "hash": row["hash"],
        "parent_hash": row["parent_hash"],
        "nonce": _text(node, "nonce"),
        "sha3_uncles": _text(node, "sha3Uncles"),
        "logs_bloom": _text(node, "logsBloom"),
        "transactions_root": _text(node, "transactionsRoot"),
        "state_root": _text(node, "stateRoot"),
        "receipts_root": _text(node, "receiptsRoot"),
        "miner": row["miner"],
        "difficulty": _hex_int(node, "difficulty"),
        "total_difficulty": _hex_int(node, "totalDifficulty"),
        "size": _hex_int(node, "size"),
        "extra_data": _text(node, "extraData"),
        "gas_limit": row["gas_limit"],
        "gas_used": row["gas_used"],
        "timestamp": row["timestamp"],
        "transaction_count": row["transaction_count"],
        "base_fee_per_gas": row["base_fee_per_gas"],
        "withdrawals_root": _text(node, "withdrawalsRoot"),
        "withdrawals": None if not isinstance(withdrawals, list) else [_etl_withdrawal(w) for w in withdrawals],
        "blob_gas_used": _hex_int(node, "blobGasUsed"),
        "excess_blob_gas": _hex_int(node, "excessBlobGas"),
    }


def _etl_withdrawal(withdrawal) -> dict | None:
    if not isinstance(withdrawal, dict):
        return None
    return {
        "index": _hex_int(withdrawal, "index"),
        "validator_index": _hex_int(withdrawal, "validatorIndex"),
        "address": _text(withdrawal, "address"),
        "amount": _hex_int(withdrawal, "amount"),
    }


def _etl_transfer(row: dict) -> dict:
    return {column: row[column] for column in TRANSFER_COLUMNS_WITH_BLOCK}


def _dead_letter_line(letter: dict) -> str:
    shown = dict(letter)
    if shown["payload_bytes"] is not None:
        shown["payload_bytes"] = base64.b64encode(shown["payload_bytes"]).decode()
    return json.dumps(shown, sort_keys=True) + "\n"


class _PendingFile:
    """A text file written under a hidden temporary name beside its final one; ``commit`` renames
    it into place, ``discard`` removes what was not committed. Streamed, unlike
    ``io_connectors.atomic_files``, as a long range's blocks need not fit in memory."""

    def __init__(self, final_path: str):
        self.final_path = final_path
        directory, name = os.path.split(final_path)
        os.makedirs(directory, exist_ok=True)
        self.temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        self.handle: io.TextIOWrapper = open(self.temporary, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.temporary, self.final_path)
        self.temporary = None

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        if self.temporary is not None and os.path.exists(self.temporary):
            os.remove(self.temporary)
