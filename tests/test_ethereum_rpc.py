"""The Ethereum JSON-RPC client and its converters, against a real anvil node and a scripted HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from io_connectors.ethereum_rpc import (
    TRANSFER_TOPIC,
    EthereumRpc,
    InvalidRpcUrl,
    MalformedResponse,
    NodeError,
    NodeUnreachable,
    block_rows,
    display_url,
    transfer_row,
    transfer_rows,
)
from runners.ports import free_port
from tests.support.anvil import anvil_node_fixture, new_anvil_fixture
from tests.support.paths import ROOT

anvil_node = anvil_node_fixture()
new_anvil = new_anvil_fixture()

FAST = {"backoff_base": 0.01, "backoff_cap": 0.02}
"""Retries without the production waits."""
ZERO = "0x" + "00" * 20


@pytest.fixture(scope="module")
def sent(anvil_node):
    """Two tokens and an ERC-721-like collectible on the module's node, and the ERC-20 transfers
    the tests made, as (token, from, to, value, transaction hash), in the order mined."""
    node = anvil_node
    a = node.accounts
    supply = 2**256 - 1
    token = node.deploy_token("Test Token", "TST", 18, supply)
    stable = node.deploy_token("Test Dollar", "TUSD", 6, 10**15, deployer=a[1])
    transfers = [
        (token, ZERO, a[0], supply, node.deployments[token]),
        (stable, ZERO, a[1], 10**15, node.deployments[stable]),
    ]
    for to, value in ((a[1], 2**64 + 1), (a[2], 2**200 + 12345), (a[3], 0)):
        transfers.append((token, a[0], to, value, node.transfer(token, a[0], to, value)))
    batch = [(token, a[1], a[3], 5), (stable, a[1], a[4], 1_000_000), (token, a[2], a[5], 7)]
    for (tok, sender, to, value), tx in zip(batch, node.transfers_in_one_block(batch)):
        transfers.append((tok, sender, to, value, tx))
    node.approve(token, a[0], a[6], 1000)
    transfers.append((token, a[0], a[7], 999, node.transfer_from(token, a[6], a[0], a[7], 999)))
    collectible = node.deploy_collectible()
    mint = node.mint_collectible(collectible, a[0], a[8], 42)
    return {"transfers": transfers, "head": node.block_number(), "collectible_mint": mint, "token": token}


@pytest.fixture
def client(anvil_node):
    with EthereumRpc(anvil_node.url, **FAST) as rpc:
        yield rpc


def test_block_rows_equal_the_nodes_blocks(anvil_node, sent, client):
    numbers = list(range(sent["head"] + 1))
    rows, dead = block_rows(client.blocks_by_number(numbers), "test")
    assert dead == []
    assert [row["number"] for row in rows] == numbers
    for row in rows:
        raw = anvil_node.block(row["number"])
        assert row["hash"] == raw["hash"] and row["parent_hash"] == raw["parentHash"]
        assert row["timestamp"] == int(raw["timestamp"], 16) and row["event_time"] == row["timestamp"] * 1_000_000
        assert row["transaction_count"] == len(raw["transactions"])
        assert (row["gas_used"], row["gas_limit"]) == (int(raw["gasUsed"], 16), int(raw["gasLimit"], 16))
        assert row["base_fee_per_gas"] == int(raw["baseFeePerGas"], 16)
        assert row["miner"] == raw["miner"].lower()
        assert (row["chain"], row["status"], row["retracted"]) == ("ethereum", "latest", False)
    for before, after in zip(rows, rows[1:]):
        assert after["parent_hash"] == before["hash"]
    assert max(row["transaction_count"] for row in rows) == 3  # the three transfers mined together


def test_blocks_by_tag_and_hash(anvil_node, sent, client):
    latest, safe, finalized = client.blocks_by_number(["latest", "safe", "finalized"])
    assert int(latest["number"], 16) == client.block_number() >= sent["head"]
    assert int(finalized["number"], 16) <= int(safe["number"], 16) <= int(latest["number"], 16)
    assert client.block_by_hash(latest["hash"]) == latest
    assert client.block_by_hash("0x" + "ab" * 32) is None
    assert client.blocks_by_number([10**9]) == [None]
    with pytest.raises(ValueError):
        client.blocks_by_number(["pending"])


def test_transfers_read_back_equal_what_was_sent(anvil_node, sent, client):
    logs = client.transfer_logs(0, sent["head"])
    blocks = {b["hash"]: int(b["timestamp"], 16) for b in client.blocks_by_number(range(sent["head"] + 1))}
    rows, dead = transfer_rows(logs, blocks, "test")
    got = [
        (r["token_address"], r["from_address"], r["to_address"], int(r["value"]), r["transaction_hash"]) for r in rows
    ]
    assert got == sent["transfers"]
    for row in rows:
        receipt = anvil_node.receipt(row["transaction_hash"])
        assert row["block_number"] == int(receipt["blockNumber"], 16)
        assert row["block_hash"] == receipt["blockHash"]
        assert row["block_timestamp"] == int(anvil_node.block(row["block_number"])["timestamp"], 16)
        assert row["transfer_id"] == f"{row['block_hash']}_{row['log_index']}"
        assert row["value"] == str(int(row["value"])) and isinstance(row["value"], str)
    in_one_block = [r for r in rows if r["block_number"] == rows[5]["block_number"]]
    assert [r["log_index"] for r in in_one_block] == [0, 1, 2]
    assert [d["reason"] for d in dead] == ["not_erc20_transfer"]  # the collectible's mint


def test_values_above_2_64_stay_exact(sent, client):
    rows, _ = transfer_rows(
        client.transfer_logs(0, sent["head"]),
        {b["hash"]: 0 for b in client.blocks_by_number(range(sent["head"] + 1))},
        "test",
    )
    values = {row["value"] for row in rows}
    assert {str(2**64 + 1), str(2**200 + 12345), str(2**256 - 1), "0"} <= values


def test_logs_of_one_block_by_hash_are_the_ranges(sent, client):
    logs = client.transfer_logs(0, sent["head"])
    block_hash = logs[5]["blockHash"]
    assert client.transfer_logs_of_block(block_hash) == [entry for entry in logs if entry["blockHash"] == block_hash]
    assert client.transfer_logs(0, sent["head"], addresses=[sent["token"]]) == [
        entry for entry in logs if entry["address"] == sent["token"]
    ]


def test_an_erc721_transfer_is_a_dead_letter_with_its_log(anvil_node, sent, client):
    receipt = anvil_node.receipt(sent["collectible_mint"])
    number = int(receipt["blockNumber"], 16)
    (entry,) = client.transfer_logs(number, number)
    rows, (letter,) = transfer_rows([entry], {receipt["blockHash"]: 1_700_000_000}, client.where + " eth_getLogs")
    assert rows == []
    assert letter["reason"] == "not_erc20_transfer" and "4 topics" in letter["error_message"]
    assert json.loads(letter["payload_string"]) == entry and json.loads(letter["payload_bytes"]) == entry
    assert letter["source"] == f"{display_url(anvil_node.url)} eth_getLogs"
    assert letter["source_offset"] == number and letter["event_time"] == 1_700_000_000 * 1_000_000
    assert letter["stage"] == "parse" and letter["exchange"] == "ethereum"


GOOD_LOG = {
    "address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "topics": [
        TRANSFER_TOPIC,
        "0x" + "0" * 24 + "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        "0x" + "0" * 24 + "7" * 40,
    ],
    "data": "0x" + f"{2**70:064x}",
    "blockHash": "0x" + "1" * 64,
    "blockNumber": "0x10",
    "transactionHash": "0x" + "2" * 64,
    "logIndex": "0x3",
    "removed": False,
}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"topics": ["0x" + "ab" * 32, *GOOD_LOG["topics"][1:]]}, "not_erc20_transfer"),
        ({"topics": GOOD_LOG["topics"][:2]}, "not_erc20_transfer"),
        ({"data": "0x"}, "not_erc20_transfer"),
        ({"data": GOOD_LOG["data"] + "00"}, "not_erc20_transfer"),
        ({"topics": [TRANSFER_TOPIC, "0x" + "f" * 64, GOOD_LOG["topics"][2]]}, "not_erc20_transfer"),
        ({"removed": True}, "removed_log"),
        ({"topics": "not a list"}, "malformed"),
        ({"data": "0xzz" + "0" * 62}, "malformed"),
        ({"address": "0x1234"}, "malformed"),
        ({"logIndex": None}, "malformed"),
        ({"logIndex": "0x" + "f" * 17}, "malformed"),
        ({"blockHash": "0x" + "9" * 64}, "malformed"),  # a block this read does not hold
        ({"transactionHash": 5}, "malformed"),
    ],
)
def test_a_log_that_is_no_erc20_transfer_is_a_dead_letter(change, reason):
    entry = {**GOOD_LOG, **change}
    rows, dead = transfer_rows([entry], {GOOD_LOG["blockHash"]: 7}, "node eth_getLogs")
    assert rows == [] and [letter["reason"] for letter in dead] == [reason]
    assert json.loads(dead[0]["payload_string"]) == entry and dead[0]["source"] == "node eth_getLogs"


def test_a_good_log_becomes_the_contracts_row():
    row = transfer_row(GOOD_LOG, 1_700_000_000, "finalized")
    assert row == {
        "chain": "ethereum",
        "token_address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "from_address": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        "to_address": "0x" + "7" * 40,
        "value": str(2**70),
        "transaction_hash": "0x" + "2" * 64,
        "log_index": 3,
        "block_number": 16,
        "block_hash": "0x" + "1" * 64,
        "block_timestamp": 1_700_000_000,
        "event_time": 1_700_000_000_000_000,
        "transfer_id": "0x" + "1" * 64 + "_3",
        "status": "finalized",
        "retracted": False,
    }


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_value_is_the_data_word_as_exact_decimal(value):
    word = value.to_bytes(32, "big")  # the reference: the ABI's big-endian word, decoded by the standard library
    row = transfer_row({**GOOD_LOG, "data": "0x" + word.hex()}, 0)
    assert row["value"] == format(int.from_bytes(word, "big"), "d")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80) | st.sampled_from(list(GOOD_LOG.values())[:4]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


GOOD_BLOCK = {
    "number": "0x10",
    "hash": "0x" + "1" * 64,
    "parentHash": "0x" + "0" * 64,
    "timestamp": "0x6553f100",
    "miner": "0x" + "a" * 40,
    "gasUsed": "0x5208",
    "gasLimit": "0x1c9c380",
    "baseFeePerGas": "0x7",
    "transactions": ["0x" + "2" * 64],
}


@given(st.dictionaries(st.sampled_from(list(GOOD_LOG)), json_values, max_size=8), st.booleans())
def test_any_log_is_a_row_or_a_dead_letter_never_an_exception(changes, merged):
    entry = {**GOOD_LOG, **changes} if merged else changes
    rows, dead = transfer_rows([entry], {GOOD_LOG["blockHash"]: 7}, "fuzz")
    assert len(rows) + len(dead) == 1


@given(st.dictionaries(st.sampled_from(list(GOOD_BLOCK)), json_values, max_size=8), st.booleans())
def test_any_block_is_a_row_or_a_dead_letter_never_an_exception(changes, merged):
    block = {**GOOD_BLOCK, **changes} if merged else changes
    rows, dead = block_rows([block], "fuzz")
    assert len(rows) + len(dead) == 1
    assert all(-(2**63) <= row[k] < 2**63 for row in rows for k in ("number", "timestamp", "event_time", "gas_used"))


# -- a scripted HTTP server: malformed answers, failures, and how the client takes them ----------


class ScriptedNode:
    """A local HTTP server answering POSTs from a script, one step per request; the last step
    repeats. A step is (status, body) or a function of the request's JSON giving one."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.requests: list = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(request)
                step = server.steps[min(len(server.requests), len(server.steps)) - 1]
                status, body = step(request) if callable(step) else step
                if status is None:  # hang up without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def answer(result):
    """A step answering every request of the batch (or the one request) with ``result``."""

    def step(request):
        one = lambda r: {"jsonrpc": "2.0", "id": r["id"], "result": result}  # noqa: E731
        return 200, json.dumps([one(r) for r in request] if isinstance(request, list) else one(request)).encode()

    return step


@pytest.fixture
def scripted():
    servers = []

    def start(*steps):
        servers.append(ScriptedNode(steps))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_bad_json_is_retried_then_read(scripted):
    node = scripted((200, b"{not json"), (200, b'{"jsonrpc": "2.0", "id": 1, "res'), answer("0x2a"))
    retries = []
    with EthereumRpc(node.url, on_retry=lambda attempt, problem: retries.append(problem), **FAST) as rpc:
        assert rpc.block_number() == 42
    assert len(node.requests) == 3 and all("not JSON" in problem for problem in retries)


def test_always_malformed_is_a_typed_error_after_the_attempts(scripted):
    node = scripted((200, b"<html>a proxy's page</html>"))
    with EthereumRpc(node.url, attempts=3, **FAST) as rpc, pytest.raises(MalformedResponse) as caught:
        rpc.block_number()
    assert len(node.requests) == 3
    assert caught.value.payload == b"<html>a proxy's page</html>"
    assert "gave up after 3 attempts" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "body, problem",
    [
        (lambda r: {"jsonrpc": "2.0", "id": r["id"] + 1, "result": "0x1"}, "id"),
        (lambda r: {"jsonrpc": "1.0", "id": r["id"], "result": "0x1"}, "JSON-RPC 2.0"),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"]}, "neither"),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"], "result": "0x1", "error": {"code": 1}}, "both"),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"], "error": "bad"}, "error object"),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"], "result": "forty-two"}, "hex quantity"),
        (lambda r: [1, 2], "response object"),
    ],
)
def test_answers_that_are_not_json_rpc_are_malformed(scripted, body, problem):
    node = scripted(lambda request: (200, json.dumps(body(request)).encode()))
    with EthereumRpc(node.url, attempts=2, **FAST) as rpc, pytest.raises(MalformedResponse, match=problem):
        rpc.block_number()


def test_json_nested_too_deeply_is_malformed(scripted):
    node = scripted((200, b"[" * 200_000 + b"]" * 200_000))
    with EthereumRpc(node.url, attempts=2, **FAST) as rpc, pytest.raises(MalformedResponse, match="not JSON"):
        rpc.block_number()


def test_a_batch_missing_an_answer_is_malformed(scripted):
    node = scripted(
        lambda batch: (200, json.dumps([{"jsonrpc": "2.0", "id": batch[0]["id"], "result": None}]).encode())
    )
    with EthereumRpc(node.url, attempts=2, **FAST) as rpc, pytest.raises(MalformedResponse, match="got no answer"):
        rpc.blocks_by_number([1, 2])


def test_batches_are_split_and_matched_by_id(scripted):
    def shuffled(batch):  # answers in reverse order: the client matches them by id
        return 200, json.dumps(
            [{"jsonrpc": "2.0", "id": r["id"], "result": r["params"][0]} for r in batch[::-1]]
        ).encode()

    node = scripted(shuffled)
    with EthereumRpc(node.url, batch_size=4, **FAST) as rpc:
        assert rpc.batch([("echo", [n]) for n in range(10)]) == list(range(10))
    assert [len(batch) for batch in node.requests] == [4, 4, 2]


def test_a_node_error_is_not_retried(scripted):
    error = {"code": -32005, "message": "query returned more than 10000 results"}
    node = scripted(lambda r: (200, json.dumps({"jsonrpc": "2.0", "id": r["id"], "error": error}).encode()))
    with EthereumRpc(node.url, **FAST) as rpc, pytest.raises(NodeError, match="more than 10000") as caught:
        rpc.transfer_logs(0, 10)
    assert caught.value.code == -32005 and len(node.requests) == 1


def test_a_refused_batch_is_its_error(scripted):
    refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}
    node = scripted((200, json.dumps(refusal).encode()))
    with EthereumRpc(node.url, **FAST) as rpc, pytest.raises(NodeError, match="batch too large"):
        rpc.blocks_by_number([1, 2, 3])
    assert len(node.requests) == 1


def test_server_errors_and_hang_ups_are_retried(scripted):
    node = scripted((503, b"busy"), (None, b""), (429, b"slow down"), answer("0x7"))
    with EthereumRpc(node.url, **FAST) as rpc:
        assert rpc.block_number() == 7
    assert len(node.requests) == 4


def test_always_failing_is_node_unreachable(scripted):
    node = scripted((502, b"bad gateway"))
    with EthereumRpc(node.url, attempts=3, **FAST) as rpc, pytest.raises(NodeUnreachable, match="HTTP 502"):
        rpc.block_number()
    assert len(node.requests) == 3


def test_a_4xx_page_is_a_node_error_at_once(scripted):
    node = scripted((404, b"<html>not found</html>"))
    with EthereumRpc(node.url, **FAST) as rpc, pytest.raises(NodeError, match="HTTP 404") as caught:
        rpc.block_number()
    assert caught.value.http_status == 404 and len(node.requests) == 1


def test_a_slow_answer_times_out_and_is_retried(scripted):
    def slow(request):
        time.sleep(0.5)
        return answer("0x1")(request)

    node = scripted(slow, answer("0x1"))
    with EthereumRpc(node.url, timeout=0.2, **FAST) as rpc:
        assert rpc.block_number() == 1
    assert len(node.requests) == 2


def test_node_down_then_up_retry_succeeds(new_anvil):
    node = new_anvil(start=False)  # its port is chosen, nothing listens there yet
    problems = []

    def start_node(attempt, problem):
        problems.append(problem)
        if attempt == 2:
            node.start()

    with EthereumRpc(node.url, attempts=5, on_retry=start_node, **FAST) as rpc:
        assert rpc.block_number() == 0
    assert len(problems) == 2 and all("ConnectError" in problem for problem in problems)


def test_a_node_that_stays_down_is_one_line():
    with EthereumRpc(f"http://127.0.0.1:{free_port()}", attempts=2, **FAST) as rpc:
        with pytest.raises(NodeUnreachable) as caught:
            rpc.block_number()
    assert "gave up after 2 attempts" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("url", ["localhost:8545", "ftp://node", "http://", "http://host:port", "", "node"])
def test_bad_urls_are_refused(url):
    with pytest.raises(InvalidRpcUrl):
        EthereumRpc(url)


def test_urls_are_shown_without_their_secrets():
    assert display_url("https://mainnet.infura.io/v3/SECRETKEY") == "https://mainnet.infura.io/…"
    assert display_url("https://user:pw@node.example:8545") == "https://node.example:8545/…"
    assert display_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


# -- anvil's reorganizations, as the chain tests drive them --------------------------------------


def test_reorg_replaces_the_newest_blocks_and_their_transfers(new_anvil):
    node = new_anvil()
    a = node.accounts
    token = node.deploy_token()
    for value in (1, 2, 3):
        node.transfer(token, a[0], a[1], value)
    head = node.block_number()
    before = [node.block(n)["hash"] for n in range(head + 1)]
    node.reorg(2, [(token, a[0], a[2], 20, 0), (token, a[0], a[3], 30, 1)])
    after = [node.block(n)["hash"] for n in range(head + 1)]
    assert node.block_number() == head
    assert after[: head - 1] == before[: head - 1] and all(x != y for x, y in zip(after[-2:], before[-2:]))
    with EthereumRpc(node.url, **FAST) as rpc:
        logs = rpc.transfer_logs(head - 1, head)
        rows, _ = transfer_rows(logs, {h: 0 for h in after}, "test")
        assert [(r["to_address"], r["value"], r["block_number"]) for r in rows] == [
            (a[2], "20", head - 1),
            (a[3], "30", head),
        ]
        snapshot = node.snapshot()
        node.mine(2)
        orphaned = node.block("latest")["hash"]
        node.reorg_from_snapshot(snapshot, [(token, a[0], a[4], 40)])
        assert node.block_number() == head + 2 and node.block("latest")["hash"] != orphaned
        assert rpc.block_by_hash(orphaned) is None


def test_the_committed_contract_artifact_is_what_the_sources_compile_to():
    check = subprocess.run(
        [sys.executable, str(ROOT / "contracts" / "compile.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
