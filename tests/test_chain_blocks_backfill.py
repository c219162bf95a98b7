"""A backfill of an ethereumetl export as it is written: ``export_blocks_and_transactions``'s blocks
(ethereum-etl's 23 columns) beside ``export_token_transfers``'s transfers (7 columns: no block hash,
no block time). The run joins them by block number: its token activity equals that of a run given
the same transfers with their block hash and time inline; a transfer whose block the blocks lack,
or whose own block hash they contradict, is a dead letter; the blocks' accounting reconciles; and
``cryptobeam validate`` passes. In CSV, and in JSON lines."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from io_connectors.bar_reader import final_bars
from io_connectors.formats.ethereum_etl import BLOCK_EXPORT, TOKEN_TRANSFER_EXPORT, write_csv_text
from tests.support.chain_records import T0_SECONDS, block_hash, token_address, transfer, transfers_table
from tests.support.commands import cryptobeam

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
FIRST_BLOCK = 18_000_000
BLOCKS = 30
MISSING_BLOCK = FIRST_BLOCK + BLOCKS + 5  # no block file holds it
BATCH_ROWS = 16  # several batches a file: later batches find their columns by the file's header


def _seconds(number: int) -> int:
    return T0_SECONDS + 12 * (number - FIRST_BLOCK)


def _transfers() -> list[dict]:
    rng = random.Random(25)
    tokens = [USDT, token_address(3)]
    return [
        transfer(rng.choice(tokens), rng.randrange(5), rng.randrange(5), rng.randrange(1, 10**20), n, i, _seconds(n))
        for n in range(FIRST_BLOCK, FIRST_BLOCK + BLOCKS)
        for i in range(rng.randrange(1, 4))
    ]


def _block(number: int) -> dict:
    """A block as ethereum-etl exports it: every column of its blocks.csv."""
    return {
        "number": number,
        "hash": block_hash(number),
        "parent_hash": block_hash(number - 1),
        "nonce": "0x0000000000000000",
        "sha3_uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "logs_bloom": "0x" + f"{number:0512x}",
        "transactions_root": "0x" + "1" * 64,
        "state_root": "0x" + "2" * 64,
        "receipts_root": "0x" + "3" * 64,
        "miner": "0x95222290dd7278aa3ddd389cc1e1d165cc4bafe5",
        "difficulty": 0,
        "total_difficulty": 58750003716598352816469,
        "size": 160_000 + number % 1000,
        "extra_data": "0x6265617665726275696c642e6f7267",
        "gas_limit": 30_000_000,
        "gas_used": 12_000_000 + number % 7,
        "timestamp": _seconds(number),
        "transaction_count": 150 + number % 11,
        "base_fee_per_gas": 20_000_000_000 + number,
        "withdrawals_root": "0x" + "4" * 64,
        "withdrawals": [{"index": number, "validator_index": 7, "address": "0x" + "5" * 40, "amount": 17}],
        "blob_gas_used": 0,
        "excess_blob_gas": 0,
    }


def _csv_field(value) -> str:
    if isinstance(value, list):  # ethereum-etl writes the withdrawals as JSON, quoted: it holds commas
        return '"' + json.dumps(value).replace('"', '""') + '"'
    return str(value)


def blocks_csv(numbers) -> str:
    columns = BLOCK_EXPORT.etl_columns
    assert len(columns) == 23
    rows = [",".join(_csv_field(_block(n)[c]) for c in columns) for n in numbers]
    return "\n".join([",".join(columns), *rows]) + "\n"


def blocks_json(numbers) -> str:
    return "".join(json.dumps({"type": "block", **_block(n)}) + "\n" for n in numbers)


def bare_transfers_csv(rows: list[dict]) -> str:
    """ethereumetl export_token_transfers' CSV: its 7 columns, nothing of the block but its number."""
    columns = TOKEN_TRANSFER_EXPORT.etl_columns
    assert len(columns) == 7
    return "\n".join([",".join(columns), *(",".join(str(row[c]) for c in columns) for row in rows)]) + "\n"


def bare_transfers_json(rows: list[dict]) -> str:
    columns = TOKEN_TRANSFER_EXPORT.etl_columns
    return "".join(
        json.dumps({"type": "token_transfer", **{c: int(row[c]) if c == "value" else row[c] for c in columns}}) + "\n"
        for row in rows
    )


def backfill(inputs: list[tuple[str, str]], out) -> dict:
    arguments = [argument for source, glob in inputs for argument in ("--input", f"{source}:{glob}")]
    result = cryptobeam(
        "backfill",
        *arguments,
        "--bars",
        "chain:1m",
        "--batch-rows",
        str(BATCH_ROWS),
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads((out / "_SUMMARY.json").read_text())


def final_dead_letters(out) -> list[dict]:
    return pq.read_table(str(out / "dead_letter")).to_pylist()


def activity(out) -> dict:
    return {
        (row["token_address"], row["window_start"]): {
            name: row[name] for name in ("transfer_count", "volume_raw", "unique_senders", "unique_receivers")
        }
        for row in final_bars(str(out), "token_activity")
    }


ROWS = _transfers()
NOT_FOUND = transfer(USDT, 1, 2, 5, MISSING_BLOCK, 0, _seconds(MISSING_BLOCK))
MISMATCH = transfer(USDT, 1, 2, 6, FIRST_BLOCK + 3, 99, _seconds(FIRST_BLOCK + 3), fork=1)  # another branch's hash


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    """The transfers with their block hash and time in the file: no blocks needed."""
    base = tmp_path_factory.mktemp("inline")
    (base / "token_transfers.csv").write_text(write_csv_text(transfers_table(ROWS), "token_transfer"))
    summary = backfill([("ethereum-etl-token-transfers", f"{base}/token_transfers.csv")], base / "out")
    assert summary["reconciled"], summary["problems"]
    return activity(base / "out")


@pytest.fixture(scope="module")
def joined_csv(tmp_path_factory):
    """The export as ethereum-etl writes it, in CSV: blocks in two files, one block in both; one
    block line damaged; the transfers in ethereum-etl's 7 columns, a few in another column order
    (a file of more lines than a batch), one in a block no file holds, and one, with block columns
    of its own, naming a block hash the blocks contradict."""
    base = tmp_path_factory.mktemp("joined_csv")
    (base / "blocks").mkdir()
    (base / "token_transfers").mkdir()
    numbers = list(range(FIRST_BLOCK, FIRST_BLOCK + BLOCKS))
    middle = BLOCKS // 2
    (base / "blocks" / "blocks_a.csv").write_text(blocks_csv(numbers[: middle + 1]))
    damaged = blocks_csv(numbers[middle:]).splitlines(keepends=True)
    damaged.insert(3, "18000017,0xnot-a-hash\n")
    (base / "blocks" / "blocks_b.csv").write_text("".join(damaged))
    head, tail = ROWS[:20], ROWS[20:]
    (base / "token_transfers" / "token_transfers_a.csv").write_text(bare_transfers_csv(head + [NOT_FOUND]))
    order = ["block_number", "log_index", "value", "to_address", "from_address", "token_address", "transaction_hash"]
    assert len(tail) > 2 * BATCH_ROWS
    (base / "token_transfers" / "token_transfers_b.csv").write_text(
        "\n".join([",".join(order), *(",".join(str(row[c]) for c in order) for row in tail)]) + "\n"
    )
    (base / "token_transfers" / "token_transfers_c.csv").write_text(
        write_csv_text(transfers_table([MISMATCH]), "token_transfer")
    )
    out = base / "out"
    summary = backfill(
        [
            ("ethereum-etl-blocks", f"{base}/blocks/*.csv"),
            ("ethereum-etl-token-transfers", f"{base}/token_transfers/*.csv"),
        ],
        out,
    )
    return out, summary


def test_an_export_without_block_hashes_joined_with_its_blocks_equals_the_same_transfers_given_them(inline, joined_csv):
    out, _summary = joined_csv
    assert activity(out) == inline


def test_a_transfer_the_blocks_lack_or_contradict_is_a_dead_letter_and_everything_reconciles(joined_csv):
    out, summary = joined_csv
    assert summary["reconciled"], summary["problems"]
    assert summary["dead_letters_by_reason"] == {"block_not_found": 1, "block_mismatch": 1, "malformed": 1}
    transfers_read = len(ROWS) + 2
    assert summary["token_transfers"]["records_in"] == transfers_read
    assert summary["token_transfers"]["in_aggregates"] == len(ROWS)
    # Blocks read = used + duplicates + dead letters: one block is in both files, one line is damaged.
    assert summary["blocks"] == {"records_in": BLOCKS + 2, "trades_parsed": BLOCKS + 1, "used": BLOCKS, "duplicates": 1}
    letters = {letter["reason"]: letter for letter in final_dead_letters(out)}
    assert letters["block_not_found"]["payload_string"] == ",".join(
        str(NOT_FOUND[c]) for c in TOKEN_TRANSFER_EXPORT.etl_columns
    )
    assert str(MISSING_BLOCK) in letters["block_not_found"]["error_message"]
    assert MISMATCH["block_hash"] in letters["block_mismatch"]["error_message"]
    assert letters["block_mismatch"]["source"].endswith("token_transfers_c.csv")
    assert letters["malformed"]["payload_string"] == "18000017,0xnot-a-hash"
    validated = cryptobeam("validate", str(out))
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_an_export_in_json_lines_joins_the_same(inline, tmp_path):
    (tmp_path / "blocks.json").write_text(blocks_json(range(FIRST_BLOCK, FIRST_BLOCK + BLOCKS)))
    (tmp_path / "token_transfers.json").write_text(bare_transfers_json(ROWS + [NOT_FOUND]))
    summary = backfill(
        [
            ("ethereum-etl-blocks", f"{tmp_path}/blocks.json"),
            ("ethereum-etl-token-transfers", f"{tmp_path}/token_transfers.json"),
        ],
        tmp_path / "out",
    )
    assert summary["reconciled"], summary["problems"]
    assert summary["dead_letters_by_reason"] == {"block_not_found": 1}
    assert summary["blocks"]["used"] == BLOCKS
    assert activity(tmp_path / "out") == inline
