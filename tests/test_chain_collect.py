"""``collect --chain ethereum`` against a real anvil node and a real Kafka broker.

The collector follows anvil while the tests make ERC-20 transfers (and an ERC-721 mint, whose
Transfer log is no ERC-20 transfer), reorganize the chain with ``anvil_reorg``, stop the node and
start it again, or put a proxy in front of it that garbles some answers. The topics are read back
with the project's decoder: what the blocks and transfers topics leave standing once the
retractions are netted out must be exactly the chain the node holds at the end, read from it
directly; and the collector's counts must say so too.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from beam_pipelines.collect_command import add_collect_parser
from io_connectors.avro_wire import SchemaStore, decode
from io_connectors.backoff import Backoff
from io_connectors.chain_follower import BLOCK, TOKEN_TRANSFER
from io_connectors.collectors.chain_collector import (
    ChainCollector,
    ChainCollectSettings,
    ChainKafkaOutput,
    run_chain_collect,
)
from io_connectors.ethereum_rpc import EthereumRpc, block_row, transfer_rows
from tests.support.anvil import running_anvil
from tests.support.chain_runs import summary_figures

STORE = SchemaStore.shipped()


@pytest.fixture(scope="module")
def anvil_node(tmp_path_factory):
    """One anvil for the module, keeping its chain in a state file so it can be stopped and started."""
    work = tmp_path_factory.mktemp("anvil")
    with running_anvil(work, extra_args=["--state", str(work / "state.json")]) as anvil:
        yield anvil


def topics() -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    return {kind: f"{kind}_{run}" for kind in ("blocks", "token_transfers", "dead_letters")}


def chain_args(anvil, kafka: str, names: dict, *options: str):
    parser = argparse.ArgumentParser(prog="cryptobeam")
    add_collect_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(
        [
            "collect",
            "--chain",
            "ethereum",
            "--rpc",
            anvil.url,
            "--kafka",
            kafka,
            "--blocks-topic",
            names["blocks"],
            "--transfers-topic",
            names["token_transfers"],
            "--dead-letter-topic",
            names["dead_letters"],
            "--poll-interval",
            "0.05",
            "--no-progress",
            *options,
        ]
    )


def read_back(kafka: str, topic: str, schema: str) -> list[tuple]:
    """(message, decoded record) for every message on the topic's one partition, up to its end."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"test-{topic}", "log_level": 3})
    partition = TopicPartition(topic, 0, 0)
    _, end = consumer.get_watermark_offsets(partition, timeout=10)
    consumer.assign([partition])
    messages, deadline = [], time.monotonic() + 20
    while len(messages) < end and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(num_messages=end - len(messages), timeout=0.5) if m.error() is None]
    consumer.close()
    assert len(messages) == end
    return [(m, decode(m.value(), schema, STORE, timestamps_as_micros=True)) for m in messages]


def canonical_chain(url: str, first: int) -> tuple[dict, dict]:
    """The node's chain from ``first`` to its head, read directly: rows by block hash and by transfer id."""
    with EthereumRpc(url) as node:
        head = node.block_number()
        blocks = [block_row(b) for b in node.blocks_by_number(range(first, head + 1))]
        transfers = []
        for block in blocks:
            logs = node.transfer_logs_of_block(block["hash"])
            transfers += transfer_rows(logs, {block["hash"]: block["timestamp"]}, node.where)[0]
    return {b["hash"]: b for b in blocks}, {t["transfer_id"]: t for t in transfers}


def content(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("status", "retracted", "publication")}


def netted(messages: list[tuple], identity: str) -> dict:
    """The records left standing, by identity, each retraction withdrawing one earlier record of
    its identity and publication on the same partition, in order; no record published twice."""
    standing, published = {}, set()
    for message, record in messages:
        assert message.key() == b"ethereum"
        key = (record[identity], record["publication"])
        if record["retracted"]:
            assert content(standing.pop(key)) == content(record), f"retraction of {key}, which is not standing"
        else:
            assert key not in published, f"{key} published twice"
            published.add(key)
            standing[key] = record
    net = {key: record for (key, _publication), record in standing.items()}
    assert len(net) == len(standing), "two publications of one record standing"
    return net


def assert_topics_hold_the_canonical_chain(kafka: str, names: dict, url: str, first: int, counts) -> None:
    """The topics hold what the counts say, and net of retractions exactly the node's chain from ``first``."""
    blocks = read_back(kafka, names["blocks"], BLOCK)
    transfers = read_back(kafka, names["token_transfers"], TOKEN_TRANSFER)
    assert len(blocks) == counts.blocks_published + counts.blocks_retracted
    assert len(transfers) == counts.transfers_published + counts.transfers_retracted
    expected_blocks, expected_transfers = canonical_chain(url, first)
    standing_blocks, standing_transfers = netted(blocks, "hash"), netted(transfers, "transfer_id")
    assert {k: content(v) for k, v in standing_blocks.items()} == {k: content(v) for k, v in expected_blocks.items()}
    assert {k: content(v) for k, v in standing_transfers.items()} == {
        k: content(v) for k, v in expected_transfers.items()
    }
    for message, record in blocks + transfers:
        assert message.timestamp()[1] == record["event_time"] // 1000


def dead_letters(kafka: str, names: dict) -> list[dict]:
    return [record for _, record in read_back(kafka, names["dead_letters"], "dead_letter")]


class Published:
    """Counts added up over runs, in ``ChainCounters``' names."""

    def __init__(self, *summaries: dict):
        total = lambda label: sum(summary[label] for summary in summaries)  # noqa: E731
        self.blocks_published, self.blocks_retracted = total("blocks published"), total("blocks retracted")
        self.transfers_published = total("token transfers published")
        self.transfers_retracted = total("token transfers retracted")


def test_collect_follows_transfers_through_a_depth_3_reorg_and_a_restart(anvil_node, kafka_bootstrap, tmp_path, capsys):
    anvil, kafka, names = anvil_node, kafka_bootstrap, topics()
    a = anvil.accounts
    first = anvil.block_number() + 1
    token = anvil.deploy_token()
    anvil.transfer(token, a[0], a[1], 100)
    anvil.transfers_in_one_block([(token, a[0], a[2], 5), (token, a[0], a[3], 7), (token, a[1], a[3], 1)])
    collectible = anvil.deploy_collectible()
    anvil.mint_collectible(collectible, a[0], a[1], 1)  # a Transfer log with 4 topics: a dead letter
    anvil.transfer(token, a[1], a[4], 10)
    anvil.transfer(token, a[2], a[4], 2)
    anvil.mine(1)
    checkpoint = str(tmp_path / "ethereum.json")
    options = ("--from-block", str(first), "--checkpoint", checkpoint)

    head = anvil.block_number()
    assert run_chain_collect(chain_args(anvil, kafka, names, *options, "--until-block", str(head))) == 0
    first_run = summary_figures(capsys.readouterr().out)
    assert first_run["blocks published"] == head - first + 1 and first_run["token transfers published"] == 7

    orphaned = [anvil.block(n)["hash"] for n in range(head - 2, head + 1)]  # 2 transfers, then an empty block
    anvil.reorg(3, [(token, a[0], a[5], 11, 0), (token, a[3], a[5], 3, 2)])
    assert {anvil.block(n)["hash"] for n in range(head - 2, head + 1)}.isdisjoint(orphaned)
    anvil.transfer(token, a[0], a[6], 9)
    assert run_chain_collect(chain_args(anvil, kafka, names, *options, "--until-block", str(head + 1))) == 0
    second_run = summary_figures(capsys.readouterr().out)

    assert (second_run["blocks retracted"], second_run["token transfers retracted"], second_run["reorgs"]) == (3, 2, 1)
    assert (second_run["blocks published"], second_run["duplicates dropped"]) == (4, 0)  # restarted: no repeat
    assert json.loads(open(checkpoint).read())["tip"] == head + 1
    blocks = read_back(kafka, names["blocks"], BLOCK)
    assert [r["hash"] for _, r in blocks if r["retracted"]] == orphaned[::-1]
    assert_topics_hold_the_canonical_chain(kafka, names, anvil.url, first, Published(first_run, second_run))
    letters = dead_letters(kafka, names)
    assert [letter["reason"] for letter in letters] == ["not_erc20_transfer"]


def collector(anvil_url: str, kafka: str, names: dict, **settings) -> ChainCollector:
    output = ChainKafkaOutput(kafka, "ethereum", names["blocks"], names["token_transfers"], names["dead_letters"])
    node = EthereumRpc(anvil_url, attempts=3, backoff_base=0.05, backoff_cap=0.2)
    chosen = ChainCollectSettings(
        rpc_url=anvil_url, poll_interval=0.05, backoff=Backoff(base=0.05, cap=0.2), progress_every=None, **settings
    )
    return ChainCollector(chosen, output, node=node)  # the client's retries are counted too


def test_a_node_that_goes_down_and_comes_back_leaves_no_gap_and_no_duplicate(anvil_node, kafka_bootstrap):
    anvil, kafka, names = anvil_node, kafka_bootstrap, topics()
    a = anvil.accounts
    token = anvil.deploy_token()
    first = anvil.block_number()
    anvil.transfer(token, a[0], a[1], 1)
    until = anvil.block_number() + 4
    running = collector(anvil.url, kafka, names, from_block=first, until_block=until, max_seconds=60)
    worker = threading.Thread(target=running.run)
    worker.start()
    deadline = time.monotonic() + 30
    try:
        while (running.state.tip or 0) < first + 1 and worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.05)
        anvil.stop()
        worker.join(1.0)  # the collector finds the node gone and retries
        anvil.start()
        for value in range(4):
            anvil.transfer(token, a[0], a[2], value + 1)
        worker.join(30)
    finally:
        running.stop("the test ended")
        worker.join(30)
    counts = running.counts
    assert running.stop_reason == f"block {until:,} reached"
    assert counts.node_retries > 0 and counts.reconciles
    assert (counts.blocks_published, counts.duplicates, counts.retracted) == (until - first + 1, 0, 0)
    assert_topics_hold_the_canonical_chain(kafka, names, anvil.url, first, counts)


class GarblingProxy:
    """An HTTP proxy in front of the node that spoils chosen answers: the first ``garbled_blocks``
    answers holding block ``height`` lose its parentHash, and the first ``not_json`` answers are
    not JSON at all."""

    def __init__(self, upstream: str, height: int, garbled_blocks: int = 2, not_json: int = 1):
        self.upstream, self.height = upstream, hex(height)
        self.garbled_blocks, self.not_json = garbled_blocks, not_json
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = httpx.post(proxy.upstream, content=body, headers={"Content-Type": "application/json"})
                payload = proxy.spoil(answer.content)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spoil(self, payload: bytes) -> bytes:
        with self.lock:
            if self.not_json:
                self.not_json -= 1
                return b"<html>502 bad gateway</html>"
            answer = json.loads(payload)
            responses = answer if isinstance(answer, list) else [answer]
            for response in responses:
                result = response.get("result")
                if self.garbled_blocks and isinstance(result, dict) and result.get("number") == self.height:
                    self.garbled_blocks -= 1
                    del result["parentHash"]
            return json.dumps(answer).encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_garbled_node_answers_become_dead_letters_and_retries_never_a_crash(anvil_node, kafka_bootstrap):
    anvil, kafka, names = anvil_node, kafka_bootstrap, topics()
    a = anvil.accounts
    token = anvil.deploy_token()
    first = anvil.block_number()
    for value in range(3):
        anvil.transfer(token, a[0], a[1], value + 1)
    proxy = GarblingProxy(anvil.url, height=first + 2)
    try:
        running = collector(proxy.url, kafka, names, from_block=first, until_block=anvil.block_number(), max_seconds=60)
        counts = running.run()
    finally:
        proxy.close()
    assert (counts.malformed_responses, counts.dead_letters) == (2, 2) and counts.reconciles
    assert counts.node_retries >= 1  # the answer that was not JSON, asked again by the client
    assert_topics_hold_the_canonical_chain(kafka, names, anvil.url, first, counts)
    letters = dead_letters(kafka, names)
    assert [letter["reason"] for letter in letters] == ["malformed", "malformed"]
    assert all("parentHash" in letter["error_message"] for letter in letters)


def test_a_reorg_deeper_than_kept_ends_the_run_loudly_with_dead_letters(anvil_node, kafka_bootstrap, tmp_path, capsys):
    anvil, kafka, names = anvil_node, kafka_bootstrap, topics()
    first = anvil.block_number() + 1
    anvil.mine(5)
    checkpoint = str(tmp_path / "ethereum.json")
    options = ("--from-block", str(first), "--checkpoint", checkpoint, "--reorg-depth", "2")
    assert run_chain_collect(chain_args(anvil, kafka, names, *options, "--until-block", str(anvil.block_number()))) == 0
    kept = open(checkpoint).read()
    anvil.reorg(3)
    capsys.readouterr()
    code = run_chain_collect(chain_args(anvil, kafka, names, *options, "--max-seconds", "30"))
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert (
        error.startswith("cryptobeam: error: ethereum: the node's chain") and "deeper than the 2 blocks kept" in error
    )
    assert open(checkpoint).read() == kept  # nothing absorbed
    letters = dead_letters(kafka, names)
    assert [letter["reason"] for letter in letters] == ["reorg_too_deep"] * 3


def test_wrong_chain_options_are_one_line_errors(anvil_node, kafka_bootstrap, capsys):
    names = topics()
    cases = [
        (("--reorg-depth", "0"), "--reorg-depth must be at least 1"),
        (("--safe-depth", "70"), "--safe-depth must be at most --finalized-depth"),
        (("--transfers-topic", names["blocks"]), "must differ"),
        (("--feed", "binance:BTCUSDT", "--max-trades", "5"), "--feed, --max-trades: exchanges' options"),
    ]
    for options, message in cases:
        assert run_chain_collect(chain_args(anvil_node, kafka_bootstrap, names, *options)) == 2
        assert message in capsys.readouterr().err
    args = chain_args(anvil_node, kafka_bootstrap, names)
    args.rpc = "ftp://example"
    assert run_chain_collect(args) == 2
    assert "bad node URL" in capsys.readouterr().err
