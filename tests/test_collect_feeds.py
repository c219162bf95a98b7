"""Several feeds in one collector process, and the feed_status records it publishes: against local
fake exchanges and a real Kafka broker, read back with the project's own decoder. One process
with Binance (two symbols), Coinbase and Kraken publishes every trade of all three into one topic;
every (exchange, symbol) is marked connected at the start; a dropped Coinbase connection marks
only Coinbase's symbols disconnected, then resubscribed, while the other feeds keep publishing;
a clean stop marks every symbol disconnected/stopped. Wrong feed options are one-line errors."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
from collections import defaultdict

import pytest

from beam_pipelines.collect_run import collector_settings, run_collect
from io_connectors.avro_wire import decode
from io_connectors.backoff import Backoff
from io_connectors.collectors import FEEDS
from io_connectors.collectors.collector import Collector, CollectorSettings, FeedSettings
from io_connectors.collectors.kafka_output import KafkaOutput
from tests.support.collectors import (
    STORE,
    assert_exactly_the_fake_trades,
    collect_args,
    kafka_options,
    published,
    refs,
    topic,
)
from tests.support.fake_exchanges import FakeBinance, FakeCoinbase, FakeKraken, make_trades
from tests.support.kafka import read_topic
from tests.support.paths import CLI


class LongestWait(random.Random):
    """Backoff always waits its bound, so a reconnect takes a known time."""

    def uniform(self, a, b):
        return b


def decoded(bootstrap: str, name: str, expected: int, schema: str) -> list[tuple]:
    """(message, record with timestamps as micros) for each message on the topic."""
    return [
        (m, decode(m.value(), schema, STORE, timestamps_as_micros=True))
        for m in read_topic(bootstrap, name, expected, timeout_s=20)
    ]


def summary_rows(out: str) -> dict[str, list[str]]:
    """The summary table's rows: label -> its cells, the header row under ``collector``."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")]
        if len(cells) > 3 and cells[1]:
            rows[cells[1]] = cells[2:-1]
    return rows


def statuses_by_instrument(records: list[dict]) -> dict[tuple, list[dict]]:
    by_instrument = defaultdict(list)
    for record in records:
        by_instrument[(record["exchange"], record["symbol"])].append(record)
    return by_instrument


def test_one_process_publishes_every_trade_of_three_exchanges_into_one_topic(
    kafka_bootstrap, background, capsys, monkeypatch
):
    btc, eth = make_trades("BTCUSDT", 100, 20), make_trades("ETHUSDT", 500, 10)
    cb, kr = make_trades("BTC-USD", 1000, 15), make_trades("BTC/USD", 1, 12)
    binance = FakeBinance(
        btc + eth,
        [[("trades", refs("BTCUSDT", 100, 109) + refs("ETHUSDT", 500, 509)), ("trades", refs("BTCUSDT", 110, 119))]],
    )
    coinbase = FakeCoinbase(cb, [[("snapshot", refs("BTC-USD", 1000, 1004)), ("trades", refs("BTC-USD", 1005, 1014))]])
    kraken = FakeKraken(kr, [[("snapshot", refs("BTC/USD", 1, 6)), ("trades", refs("BTC/USD", 7, 12))]])
    urls = {
        name: background.start(fake)
        for name, fake in (("binance", binance), ("coinbase", coinbase), ("kraken", kraken))
    }
    trades_topic, status_topic = topic("trades"), topic("status")
    monkeypatch.setenv("COLUMNS", "200")  # the summary table on one line per row

    code = run_collect(
        collect_args(
            "--feed",
            "binance:BTCUSDT,ETHUSDT",
            "--feed",
            "coinbase:BTC-USD",
            "--feed",
            "kraken:BTC/USD",
            *[arg for name, url in urls.items() for arg in ("--ws-url", f"{name}={url}")],
            *kafka_options(kafka_bootstrap, trades_topic),
            "--status-topic",
            status_topic,
            "--max-trades",
            "57",
            "--max-seconds",
            "30",
            "--no-progress",
        )
    )

    out = capsys.readouterr().out
    assert code == 0
    messages = published(kafka_bootstrap, trades_topic, 57)
    assert len(messages) == 57
    for exchange, fakes in (("binance", btc + eth), ("coinbase", cb), ("kraken", kr)):
        assert_exactly_the_fake_trades([(m, r) for m, r in messages if r["exchange"] == exchange], fakes, exchange)
    rows = summary_rows(out)
    assert rows["collector"] == ["binance", "coinbase", "kraken", "all feeds"]
    assert rows["trades published"] == ["30", "15", "12", "57"]
    assert rows["trades received"] == ["30", "15", "12", "57"]
    assert rows["stopped because"][-1] == "57 trades published" and rows["undelivered to Kafka"][-1] == "0"
    assert rows["feed status records"] == ["4", "2", "2", "8"]  # connected, then stopped, per symbol
    assert [c["streams"] for c in binance.connections] == [["btcusdt@aggTrade", "ethusdt@aggTrade"]]


def test_feed_status_a_dropped_feed_is_disconnected_then_resubscribed_while_the_others_keep_publishing(
    kafka_bootstrap, background
):
    binance_trades = make_trades("BTCUSDT", 1, 100) + make_trades("ETHUSDT", 1, 100)
    binance_drip = [ref for i in range(1, 101) for ref in (("BTCUSDT", i), ("ETHUSDT", i))]
    binance = FakeBinance(binance_trades, [[("drip", binance_drip, 0.02)]])
    cb = make_trades("BTC-USD", 1, 20) + make_trades("ETH-USD", 1, 4)
    coinbase = FakeCoinbase(
        cb,
        [
            [
                ("snapshot", refs("BTC-USD", 1, 2) + refs("ETH-USD", 1, 2)),
                ("drip", refs("BTC-USD", 3, 10), 0.05),
                ("drop",),
            ],
            [("snapshot", refs("BTC-USD", 8, 10)), ("drip", refs("BTC-USD", 11, 20) + refs("ETH-USD", 3, 4), 0.05)],
        ],
    )
    kr = make_trades("BTC/USD", 1, 100)
    kraken = FakeKraken(kr, [[("drip", refs("BTC/USD", 1, 100), 0.04)]])
    trades_topic, status_topic = topic("trades"), topic("status")
    feeds = [
        FeedSettings(FEEDS["binance"], ("BTCUSDT", "ETHUSDT"), "aggTrade", background.start(binance)),
        FeedSettings(FEEDS["coinbase"], ("BTC-USD", "ETH-USD"), "market_trades", background.start(coinbase)),
        FeedSettings(FEEDS["kraken"], ("BTC/USD",), "trade", background.start(kraken)),
    ]
    total = len(binance_trades) + len(cb) + len(kr)
    settings = CollectorSettings(
        stale_after=5.0,
        reconnect_backoff=Backoff(1.0, 1.0, rng=LongestWait()),
        max_seconds=30,
        max_trades=total,
        progress_every=None,
    )
    collector = Collector(feeds, settings, KafkaOutput(kafka_bootstrap, trades_topic, topic("dead"), status_topic))

    asyncio.run(collector.run())

    assert collector.stop_reason == f"{total} trades published"
    assert [f.counters.reconnects for f in collector.feeds] == [0, 1, 0]
    trades = [r for _, r in decoded(kafka_bootstrap, trades_topic, total, "trade")]
    assert len(trades) == total == collector.counters.published
    statuses = decoded(kafka_bootstrap, status_topic, 14, "feed_status")
    assert len(statuses) == collector.counters.status_records == 2 * 2 + 2 * 4 + 1 * 2  # symbols * changes
    by_instrument = statuses_by_instrument([r for _, r in statuses])
    assert set(by_instrument) == {
        ("binance", "BTCUSDT"),
        ("binance", "ETHUSDT"),
        ("coinbase", "BTC-USD"),
        ("coinbase", "ETH-USD"),
        ("kraken", "BTC/USD"),
    }
    for (exchange, symbol), records in by_instrument.items():
        expected = (
            ["connected", "disconnected", "resubscribed", "disconnected"]
            if exchange == "coinbase"
            else ["connected", "disconnected"]
        )
        assert [r["status"] for r in records] == expected, (exchange, symbol)
        assert records[-1]["reason"] == "stopped" and records[0]["reason"] is None
        times = [r["event_time"] for r in records]
        assert times == sorted(times)
        assert {r["collector"] for r in records} == {f"{socket.gethostname()}:{os.getpid()}"}
    for message, record in statuses:
        assert message.key() == f"{record['exchange']}:{record['symbol']}".encode()
        assert message.timestamp()[1] == record["event_time"] // 1000
    assert {(r["exchange"], r["symbol"], r["base"], r["quote"]) for _, r in statuses} == {
        ("binance", "BTCUSDT", "BTC", "USDT"),
        ("binance", "ETHUSDT", "ETH", "USDT"),
        ("coinbase", "BTC-USD", "BTC", "USD"),
        ("coinbase", "ETH-USD", "ETH", "USD"),
        ("kraken", "BTC/USD", "BTC", "USD"),
    }

    dropped = by_instrument[("coinbase", "BTC-USD")]
    assert dropped[1]["reason"].startswith("closed")
    assert [r["event_time"] for r in by_instrument[("coinbase", "ETH-USD")]] == [r["event_time"] for r in dropped]
    lost, back = dropped[1]["event_time"], dropped[2]["event_time"]
    assert back - lost >= 1_000_000  # the backoff's second
    while_down = defaultdict(int)
    for trade in trades:
        if lost < trade["receive_time"] < back:
            while_down[trade["exchange"]] += 1
    assert while_down["coinbase"] == 0 and while_down["binance"] >= 10 and while_down["kraken"] >= 5, dict(while_down)


def test_a_feed_that_cannot_connect_is_one_disconnection_and_the_others_collect(kafka_bootstrap, background):
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        dead_url = f"ws://127.0.0.1:{unused.getsockname()[1]}"
    kr = make_trades("BTC/USD", 1, 30)
    kraken = FakeKraken(kr, [[("drip", refs("BTC/USD", 1, 30), 0.05)]])
    trades_topic, status_topic = topic("trades"), topic("status")
    feeds = [
        FeedSettings(FEEDS["coinbase"], ("BTC-USD",), "market_trades", dead_url),
        FeedSettings(FEEDS["kraken"], ("BTC/USD",), "trade", background.start(kraken)),
    ]
    settings = CollectorSettings(
        stale_after=5.0, reconnect_backoff=Backoff(0.05, 0.1), max_seconds=30, max_trades=len(kr), progress_every=None
    )
    collector = Collector(feeds, settings, KafkaOutput(kafka_bootstrap, trades_topic, topic("dead"), status_topic))

    asyncio.run(collector.run())

    dead, alive = collector.feeds
    assert dead.counters.connect_failures >= 3 and alive.counters.published == len(kr)
    assert_exactly_the_fake_trades(published(kafka_bootstrap, trades_topic, len(kr)), kr, "kraken")
    by_instrument = statuses_by_instrument([r for _, r in decoded(kafka_bootstrap, status_topic, 4, "feed_status")])
    coinbase = by_instrument[("coinbase", "BTC-USD")]
    assert [r["status"] for r in coinbase] == ["disconnected", "disconnected"]  # not one per failed attempt
    assert coinbase[0]["reason"].startswith("cannot connect: ") and coinbase[1]["reason"] == "stopped"
    assert [(r["status"], r["reason"]) for r in by_instrument[("kraken", "BTC/USD")]] == [
        ("connected", None),
        ("disconnected", "stopped"),
    ]


def test_an_exchange_refusing_a_symbol_stops_every_feed_cleanly_and_exits_2(
    kafka_bootstrap, background, capsys, monkeypatch
):
    cb = make_trades("BTC-USD", 1, 5)
    coinbase = FakeCoinbase(cb, [[("trades", refs("BTC-USD", 1, 5))]])
    kraken = FakeKraken([], [[]], unknown_symbols={"FOO/BAR"}, answer_after=1.0)  # once coinbase has published
    coinbase_url, kraken_url = background.start(coinbase), background.start(kraken)
    status_topic = topic("status")
    monkeypatch.setenv("COLUMNS", "200")

    trades_topic = topic("trades")
    code = run_collect(
        collect_args(
            "--feed",
            "coinbase:BTC-USD",
            "--feed",
            "kraken:BTC/USD,FOO/BAR",
            "--ws-url",
            f"coinbase={coinbase_url}",
            "--ws-url",
            f"kraken={kraken_url}",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            trades_topic,
            "--status-topic",
            status_topic,
            "--max-seconds",
            "20",
            "--no-progress",
        )
    )

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().splitlines()[-1] == (
        "cryptobeam: error: kraken refused subscribe FOO/BAR: Currency pair not supported FOO/BAR"
    )
    rows = summary_rows(captured.out)
    assert rows["stopped because"][-1] == "kraken refused the subscription"
    assert rows["trades published"] == ["5", "0", "5"]  # what was collected is flushed
    assert_exactly_the_fake_trades(published(kafka_bootstrap, trades_topic, 5), cb, "coinbase")
    by_instrument = statuses_by_instrument([r for _, r in decoded(kafka_bootstrap, status_topic, 8, "feed_status")])
    assert [(r["status"], r["reason"]) for r in by_instrument[("coinbase", "BTC-USD")]] == [
        ("connected", None),
        ("disconnected", "stopped"),
    ]
    for symbol in ("BTC/USD", "FOO/BAR"):
        records = by_instrument[("kraken", symbol)]
        assert [r["status"] for r in records] == ["connected", "disconnected", "disconnected"]
        assert records[1]["reason"].startswith("rejected: kraken refused subscribe FOO/BAR")
        assert records[2]["reason"] == "stopped"


def test_the_old_one_feed_form_is_one_feed_and_per_feed_options_name_their_exchange():
    old, _ = collector_settings(
        collect_args(
            "--exchange",
            "binance",
            "--symbols",
            "btcusdt",
            "--ws-url",
            "ws://a:1",
            "--channel",
            "trade",
            "--kafka",
            "x",
        )
    )
    new, _ = collector_settings(
        collect_args("--feed", "binance:BTCUSDT", "--ws-url", "ws://a:1", "--channel", "binance=trade", "--kafka", "x")
    )
    assert old == new == [FeedSettings(FEEDS["binance"], ("BTCUSDT",), "trade", "ws://a:1", "https://api.binance.com")]
    feeds, _ = collector_settings(
        collect_args(
            "--feed",
            "binance:BTCUSDT,ETHUSDT",
            "--feed",
            "kraken:BTC/USD",
            "--ws-url",
            "kraken=ws://k:2/v2?a=b",
            "--rest-url",
            "binance=http://r:3",
            "--kafka",
            "x",
        )
    )
    assert [(f.feed.name, f.symbols, f.channel, f.ws_url, f.rest_url) for f in feeds] == [
        ("binance", ("BTCUSDT", "ETHUSDT"), "aggTrade", FEEDS["binance"].ws_url, "http://r:3"),
        ("kraken", ("BTC/USD",), "trade", "ws://k:2/v2?a=b", None),
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--feed", "binance:BTCUSDT", "--exchange", "coinbase", "--symbols", "BTC-USD"], "not both"),
        (["--feed", "binance:BTCUSDT", "--symbols", "ETHUSDT"], "not both"),
        (["--feed", "binance:BTCUSDT", "--feed", "ftx:BTCUSD"], "unknown exchange 'ftx'"),
        (["--feed", "binance:"], "--feed 'binance:': no symbols given"),
        (["--feed", "kraken: , "], "no symbols given"),
        (["--feed", "binance"], "expected EXCHANGE:SYMBOLS"),
        (["--exchange", "binance", "--symbols", ""], "--symbols: no symbols given"),
        (["--feed", "binance:BTCUSDT", "--feed", "Binance:ETHUSDT"], "binance is given twice"),
        (["--feed", "coinbase:BTC-USD", "--feed", "coinbase:BTC/USD"], "coinbase is given twice"),
        ([], "give --feed EXCHANGE:SYMBOLS"),
        (["--exchange", "binance"], "give --feed EXCHANGE:SYMBOLS"),
        (["--feed", "binance:BTCUSDT", "--feed", "kraken:BTC/USD", "--ws-url", "ws://x"], "say which"),
        (["--feed", "binance:BTCUSDT", "--ws-url", "coinbase=ws://x"], "coinbase is not one of this run's feeds"),
        (["--feed", "binance:BTCUSDT", "--ws-url", "binance=ws://x", "--ws-url", "ws://y"], "given twice for binance"),
        (
            ["--feed", "binance:BTCUSDT", "--feed", "kraken:BTC/USD", "--channel", "binance=depth"],
            "choose: aggTrade, trade",
        ),
        (
            ["--feed", "binance:BTCUSDT", "--feed", "kraken:BTC/USD", "--rest-url", "kraken=http://x"],
            "not fetched over REST",
        ),
        (
            ["--feed", "binance:BTCUSDT", "--feed", "kraken:BTC/USD", "--ws-url", "kraken=http://x"],
            "must start with ws://",
        ),
        (["--feed", "binance:BTCUSDT", "--status-topic", "trades"], "--status-topic 'trades' must differ"),
    ],
)
def test_feed_option_errors_are_one_line_and_exit_2(capsys, options, message):
    assert run_collect(collect_args(*options, "--kafka", "127.0.0.1:9")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_the_cryptobeam_command_exits_2_on_mixed_feed_forms():
    result = subprocess.run(
        [
            CLI,
            "collect",
            "--feed",
            "binance:BTCUSDT",
            "--exchange",
            "kraken",
            "--symbols",
            "BTC/USD",
            "--kafka",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cryptobeam: error: give either --feed EXCHANGE:SYMBOLS (repeatable) or --exchange with --symbols, not both"
    ]
