"""``cryptobeam chain export`` against a real anvil node: the files equal the node's data, in
ethereum-etl's columns, written atomically; errors are one line."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from io_connectors.chain_export import ChainChanged, export_range
from io_connectors.ethereum_rpc import EthereumRpc, NodeUnreachable
from runners.ports import free_port
from tests.support.anvil import anvil_node_fixture, new_anvil_fixture
from tests.support.paths import CLI, ROOT

anvil_node = anvil_node_fixture()
new_anvil = new_anvil_fixture()

# ethereum-etl's own column lists (blocks.csv, token_transfers.csv), written out here rather than
# imported, so the test holds the export to them.
ETL_BLOCK_COLUMNS = (
    "number,hash,parent_hash,nonce,sha3_uncles,logs_bloom,transactions_root,state_root,receipts_root,miner,"
    "difficulty,total_difficulty,size,extra_data,gas_limit,gas_used,timestamp,transaction_count,base_fee_per_gas,"
    "withdrawals_root,withdrawals,blob_gas_used,excess_blob_gas"
).split(",")
ETL_TOKEN_TRANSFER_COLUMNS = (
    "token_address,from_address,to_address,value,transaction_hash,log_index,block_number".split(",")
)
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02}


def chain_command(*args: str) -> subprocess.CompletedProcess:
    """``cryptobeam chain ...`` in its own process."""
    return subprocess.run(
        [CLI, "chain", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="module")
def chain(anvil_node):
    """A token, transfers (one above 2**64, three in one block), an ERC-721 mint, and empty blocks."""
    node, a = anvil_node, anvil_node.accounts
    token = node.deploy_token(supply=2**250)
    sent = [(token, "0x" + "00" * 20, a[0], 2**250, node.deployments[token])]
    for to, value in ((a[1], 2**64 + 3), (a[2], 10**18)):
        sent.append((token, a[0], to, value, node.transfer(token, a[0], to, value)))
    batch = [(token, a[0], a[3], 1), (token, a[1], a[4], 2), (token, a[2], a[5], 3)]
    sent += [(*transfer, tx) for transfer, tx in zip(batch, node.transfers_in_one_block(batch))]
    node.mint_collectible(node.deploy_collectible(), a[0], a[6], 7)
    node.mine(5)
    return {"sent": sent, "head": node.block_number()}


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def exported(out: Path, table: str, first: int, last: int) -> list[dict]:
    """The rows of the export's CSV file of ``table`` (blocks, token_transfers) for blocks first..last."""
    return read_csv(out / table / f"{table}_{first}_{last}.csv")[1]


def files_under(directory: Path) -> list[str]:
    return [name for _, _, names in os.walk(directory) for name in names]


def token_with_transfers(node, count: int) -> str:
    """A new token and ``count`` transfers of it, values 1..count, from account 0 to 1, a block each."""
    a = node.accounts
    token = node.deploy_token()
    for value in range(1, count + 1):
        node.transfer(token, a[0], a[1], value)
    return token


def node_hashes(node, head: int) -> list[str]:
    return [node.block(n)["hash"] for n in range(head + 1)]


def test_export_equals_the_nodes_data_in_ethereum_etl_columns(anvil_node, chain, tmp_path):
    head = chain["head"]
    done = chain_command(
        "export", "--rpc", anvil_node.url, "--from-block", "0", "--to-block", str(head), "--out", str(tmp_path),
        "--batch-blocks", "3", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "token transfers written" in done.stdout
    columns, blocks = read_csv(tmp_path / "blocks" / f"blocks_0_{head}.csv")
    assert columns == ETL_BLOCK_COLUMNS
    assert [int(b["number"]) for b in blocks] == list(range(head + 1))
    for block in blocks:
        raw = anvil_node.block(int(block["number"]))
        for column, field in [
            ("hash", "hash"), ("parent_hash", "parentHash"), ("nonce", "nonce"), ("sha3_uncles", "sha3Uncles"),
            ("logs_bloom", "logsBloom"), ("transactions_root", "transactionsRoot"), ("state_root", "stateRoot"),
            ("receipts_root", "receiptsRoot"), ("miner", "miner"), ("extra_data", "extraData"),
        ]:  # fmt: skip
            assert block[column] == raw[field].lower(), column
        for column, field in [
            ("difficulty", "difficulty"), ("size", "size"), ("gas_limit", "gasLimit"), ("gas_used", "gasUsed"),
            ("timestamp", "timestamp"), ("base_fee_per_gas", "baseFeePerGas"),
        ]:  # fmt: skip
            assert block[column] == str(int(raw[field], 16)), column
        assert block["transaction_count"] == str(len(raw["transactions"]))
        assert block["total_difficulty"] == (
            "" if raw.get("totalDifficulty") is None else str(int(raw["totalDifficulty"], 16))
        )
        assert json.loads(block["withdrawals"] or "null") == ([] if raw.get("withdrawals") == [] else None)
    columns, transfers = read_csv(tmp_path / "token_transfers" / f"token_transfers_0_{head}.csv")
    assert columns == ETL_TOKEN_TRANSFER_COLUMNS + ["block_hash", "block_timestamp"]
    got = [
        (t["token_address"], t["from_address"], t["to_address"], int(t["value"]), t["transaction_hash"])
        for t in transfers
    ]
    assert got == chain["sent"]
    assert transfers[1]["value"] == str(2**64 + 3)
    by_number = {b["number"]: b for b in blocks}
    for transfer in transfers:
        receipt = anvil_node.receipt(transfer["transaction_hash"])
        assert transfer["block_number"] == str(int(receipt["blockNumber"], 16))
        assert transfer["block_hash"] == by_number[transfer["block_number"]]["hash"] == receipt["blockHash"]
        assert transfer["block_timestamp"] == by_number[transfer["block_number"]]["timestamp"]
    assert [t["log_index"] for t in transfers[3:6]] == ["0", "1", "2"]
    (letter,) = [json.loads(line) for line in open(tmp_path / "dead_letters" / f"dead_letters_0_{head}.jsonl")]
    assert letter["reason"] == "not_erc20_transfer" and len(json.loads(letter["payload_string"])["topics"]) == 4
    assert base64.b64decode(letter["payload_bytes"]).decode() == letter["payload_string"]
    assert not [name for name in files_under(tmp_path) if name.endswith(".tmp")]


def test_json_lines_hold_the_same_rows_with_exact_values(anvil_node, chain, tmp_path):
    head = chain["head"]
    for output_format in ("csv", "json"):
        done = chain_command(
            "export", "--rpc", anvil_node.url, "--from-block", "2", "--to-block", str(head), "--out", str(tmp_path),
            "--format", output_format, "--no-progress",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    for table in ("blocks", "token_transfers"):
        from_csv = exported(tmp_path, table, 2, head)
        from_json = [json.loads(line) for line in open(tmp_path / table / f"{table}_2_{head}.json")]
        assert len(from_json) == len(from_csv) > 0
        for csv_row, json_row in zip(from_csv, from_json):
            assert list(json_row) == list(csv_row)
            for column, value in json_row.items():
                shown = (
                    ""
                    if value is None
                    else json.dumps(value, separators=(",", ":"))
                    if isinstance(value, list)
                    else str(value)
                )
                assert shown == csv_row[column], (table, column)
    transfers = [json.loads(line) for line in open(tmp_path / "token_transfers" / f"token_transfers_2_{head}.json")]
    assert transfers[0]["value"] == str(2**64 + 3) and isinstance(transfers[0]["log_index"], int)


def test_a_reorg_of_blocks_not_yet_read_is_exported_as_the_new_chain(new_anvil, tmp_path):
    node = new_anvil()
    a = node.accounts
    token = token_with_transfers(node, 6)
    head = node.block_number()
    reorganized = []

    def reorg_after_the_first_batch(result):
        if not reorganized:  # the newest two blocks, far from the batch just read
            node.reorg(2, [(token, a[0], a[2], 100, 0), (token, a[0], a[3], 200, 1)])
            reorganized.append(True)

    with EthereumRpc(node.url, **FAST) as rpc:
        result = export_range(
            rpc, 0, head, str(tmp_path / "out"), batch_blocks=2, on_progress=reorg_after_the_first_batch
        )
    transfers = exported(tmp_path / "out", "token_transfers", 0, head)
    assert [t["value"] for t in transfers][-2:] == ["100", "200"]
    assert [b["hash"] for b in exported(tmp_path / "out", "blocks", 0, head)] == node_hashes(node, head)
    assert result.blocks == head + 1 and result.transfers == 1 + 4 + 2


class ReorgBeforeTheFirstLogs(EthereumRpc):
    """A client of the real node that reorganizes it between reading a batch's blocks and its logs,
    the moment a reorg near the head can strike."""

    reorg = None

    def transfer_logs(self, from_block, to_block, addresses=()):
        if self.reorg is not None:
            self.reorg, reorg = None, self.reorg
            reorg()
        return super().transfer_logs(from_block, to_block, addresses)


def test_a_reorg_between_blocks_and_logs_reads_the_batch_again(new_anvil, tmp_path):
    node = new_anvil()
    a = node.accounts
    token = token_with_transfers(node, 4)
    head = node.block_number()
    with ReorgBeforeTheFirstLogs(node.url, **FAST) as rpc:
        rpc.reorg = lambda: node.reorg(2, [(token, a[0], a[2], 300, 0)])
        result = export_range(rpc, 0, head, str(tmp_path / "out"))
    assert result.rereads == 1
    blocks = exported(tmp_path / "out", "blocks", 0, head)
    assert [b["hash"] for b in blocks] == node_hashes(node, head)
    transfers = exported(tmp_path / "out", "token_transfers", 0, head)
    assert [t["value"] for t in transfers] == [str(10**30), "1", "2", "300"]
    assert {t["block_hash"] for t in transfers} <= {b["hash"] for b in blocks}


def test_a_reorg_of_written_blocks_fails_the_export_and_leaves_no_files(new_anvil, tmp_path):
    node = new_anvil()
    a = node.accounts
    token = token_with_transfers(node, 4)
    head = node.block_number()

    def reorg_what_was_read(result):
        if result.blocks_read == 4:  # blocks 0..3 are read; replace 2..head
            node.reorg(head - 1, [(token, a[0], a[2], 9, 0)])

    out = tmp_path / "out"
    with EthereumRpc(node.url, **FAST) as rpc, pytest.raises(ChainChanged, match="left the chain"):
        export_range(rpc, 0, head, str(out), batch_blocks=2, on_progress=reorg_what_was_read)
    assert files_under(out) == []


def test_a_node_lost_mid_export_leaves_no_files(new_anvil, tmp_path):
    node = new_anvil()
    node.mine(10)
    out = tmp_path / "out"
    with EthereumRpc(node.url, attempts=2, **FAST) as rpc, pytest.raises(NodeUnreachable):
        export_range(rpc, 0, 10, str(out), batch_blocks=3, on_progress=lambda result: node.stop())
    assert files_under(out) == []


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cryptobeam: error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--from-block", "5", "--to-block", "4"], "--from-block 5 is after --to-block 4"),
        (["--from-block", "-1", "--to-block", "4"], "0 or more"),
        (["--from-block", "x", "--to-block", "4"], "invalid int value"),
        (["--from-block", "0", "--to-block", "1000000"], "beyond the node's head"),
        (["--from-block", "0", "--to-block", "1", "--batch-blocks", "0"], "--batch-blocks"),
        (["--from-block", "0", "--to-block", "1", "--format", "xml"], "invalid choice"),
    ],
)
def test_bad_ranges_are_one_line_and_exit_2(anvil_node, chain, tmp_path, args, says):
    line = one_line_error(chain_command("export", "--rpc", anvil_node.url, "--out", str(tmp_path), *args))
    assert says in line


@pytest.mark.parametrize("url", ["localhost:8545", "ftp://node/", "http://host:port/", "not a url"])
def test_bad_urls_are_one_line_and_exit_2(tmp_path, url):
    line = one_line_error(
        chain_command("export", "--rpc", url, "--from-block", "0", "--to-block", "1", "--out", str(tmp_path))
    )
    assert "bad node URL" in line


def test_an_unreachable_node_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v3/SECRETKEY"
    line = one_line_error(
        chain_command("export", "--rpc", url, "--from-block", "0", "--to-block", "1", "--out", str(tmp_path))
    )
    assert "could not be read" in line and "gave up after" in line and "SECRETKEY" not in line
    assert not (tmp_path / "blocks").exists()


def test_an_unwritable_output_is_one_line_and_exit_2(anvil_node, chain, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line_error(
        chain_command(
            "export", "--rpc", anvil_node.url, "--from-block", "0", "--to-block", "1", "--out", str(blocker / "out")
        )
    )
    assert "not writable" in line
