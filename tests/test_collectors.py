"""Live collectors: each exchange's frames, written here from the exchanges' documented examples,
normalize to the trade schema; against local fake exchanges and a real Kafka broker, every trade
arrives despite dropped connections, silent feeds, duplicates and gaps (filled over REST through a
429), malformed frames become dead letters, and SIGTERM stops cleanly with everything flushed."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from datetime import datetime

import pytest

from beam_pipelines.collect_run import run_collect
from io_connectors.backoff import Backoff
from io_connectors.collectors import FEEDS, binance, coinbase, kraken
from io_connectors.collectors.collector import Collector, CollectorSettings, FeedSettings
from io_connectors.collectors.frames import ExchangeRejected, FrameError
from io_connectors.collectors.kafka_output import KafkaOutput, KafkaUnreachable, check_reachable
from io_connectors.collectors.rest import retry_after_seconds
from io_connectors.collectors.trade_ids import Gap, TradeIds
from tests.support.collectors import (
    assert_exactly_the_fake_trades,
    collect_args,
    kafka_options,
    published,
    refs,
    topic,
)
from tests.support.fake_exchanges import FakeBinance, FakeBinanceRest, FakeCoinbase, FakeKraken, make_trades
from tests.support.paths import CLI, ROOT
from transforms.event_time import datetime_to_micros

FAST = dict(
    stale_after=1.0,
    reconnect_backoff=Backoff(0.05, 0.2),
    rest_backoff=Backoff(0.05, 0.2),
    max_seconds=30,
    progress_every=None,
)


def micros(text: str) -> int:
    return datetime_to_micros(datetime.fromisoformat(text))


# --- each exchange's frames, from the documented examples ---------------------------------------


def test_binance_aggtrade_and_trade_events_in_and_out_of_the_combined_envelope():
    agg = {
        "e": "aggTrade",
        "E": 1672515782136,
        "s": "BNBBTC",
        "a": 12345,
        "p": "0.001",
        "q": "100",
        "f": 100,
        "l": 105,
        "T": 1672515782136,
        "m": True,
        "M": True,
    }
    trade = {
        "e": "trade",
        "E": 1672515782136,
        "s": "BNBBTC",
        "t": 12345,
        "p": "0.001",
        "q": "100",
        "T": 1672515782136,
        "m": False,
        "M": True,
    }
    expected = {
        "exchange": "binance",
        "symbol": "BNBBTC",
        "base": "BNB",
        "quote": "BTC",
        "trade_id": "12345",
        "price": 0.001,
        "amount": 100.0,
        "side": "sell",
        "event_time": 1672515782136000,
        "receive_time": 7,
    }
    assert binance.parse_frame(json.dumps(agg), 7) == [expected]
    assert binance.parse_frame(json.dumps({"stream": "bnbbtc@aggTrade", "data": agg}).encode(), 7) == [expected]
    assert binance.parse_frame(json.dumps({"stream": "bnbbtc@trade", "data": trade}), 7) == [
        {**expected, "side": "buy"}
    ]
    assert binance.parse_frame('{"result": null, "id": 1}', 7) == []  # the answer to a SUBSCRIBE request


def test_binance_rest_rows_use_the_same_normalization():
    agg_row = {
        "a": 26129,
        "p": "0.01633102",
        "q": "4.70443515",
        "f": 27781,
        "l": 27781,
        "T": 1498793709153,
        "m": True,
        "M": True,
    }
    historical_row = {
        "id": 28457,
        "price": "4.00000100",
        "qty": "12.00000000",
        "quoteQty": "48.000012",
        "time": 1499865549590,
        "isBuyerMaker": False,
        "isBestMatch": True,
    }
    agg = binance.trade_from_row(agg_row, binance.AGG_TRADE, "LTCBTC", 1)
    assert (agg["trade_id"], agg["price"], agg["amount"], agg["side"], agg["event_time"]) == (
        "26129",
        0.01633102,
        4.70443515,
        "sell",
        1498793709153000,
    )
    historical = binance.trade_from_row(historical_row, binance.HISTORICAL_TRADE, "BNBBTC", 1)
    assert (historical["trade_id"], historical["price"], historical["amount"], historical["side"]) == (
        "28457",
        4.000001,
        12.0,
        "buy",
    )


def test_coinbase_market_trades_side_is_the_makers_and_times_keep_microseconds():
    frame = {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": "2023-02-09T20:19:35.39625135Z",
        "sequence_num": 0,
        "events": [
            {
                "type": "snapshot",
                "trades": [
                    {
                        "trade_id": "000000000",
                        "product_id": "ETH-USD",
                        "price": "1260.01",
                        "size": "0.3",
                        "side": "BUY",
                        "time": "2019-08-14T20:42:27.265Z",
                    },
                    {
                        "trade_id": "000000001",
                        "product_id": "ETH-USD",
                        "price": "1260.02",
                        "size": "0.1",
                        "side": "SELL",
                        "time": "2019-08-14T20:42:28.123456789Z",
                    },
                ],
            }
        ],
    }
    trades = coinbase.parse_frame(json.dumps(frame), 3)
    assert [(t["trade_id"], t["side"], t["price"], t["amount"]) for t in trades] == [
        ("000000000", "sell", 1260.01, 0.3),
        ("000000001", "buy", 1260.02, 0.1),
    ]
    assert [t["event_time"] for t in trades] == [
        micros("2019-08-14T20:42:27.265+00:00"),
        micros("2019-08-14T20:42:28.123456+00:00"),
    ]
    assert (trades[0]["exchange"], trades[0]["symbol"], trades[0]["base"], trades[0]["quote"]) == (
        "coinbase",
        "ETH-USD",
        "ETH",
        "USD",
    )
    heartbeat = {
        "channel": "heartbeats",
        "client_id": "",
        "timestamp": "2023-06-23T20:31:26.122969572Z",
        "sequence_num": 0,
        "events": [
            {"current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105", "heartbeat_counter": "3049"}
        ],
    }
    acknowledged = {
        "channel": "subscriptions",
        "client_id": "",
        "timestamp": "2023-02-09T20:32:59.232271735Z",
        "sequence_num": 1,
        "events": [{"subscriptions": {"market_trades": ["ETH-USD"]}}],
    }
    assert coinbase.parse_frame(json.dumps(heartbeat), 3) == coinbase.parse_frame(json.dumps(acknowledged), 3) == []


def test_kraken_v2_trades_carry_the_taker_side():
    frame = {
        "channel": "trade",
        "type": "update",
        "data": [
            {
                "symbol": "MATIC/USD",
                "side": "buy",
                "price": 0.5147,
                "qty": 6423.46326,
                "ord_type": "limit",
                "trade_id": 4665846,
                "timestamp": "2023-09-25T07:48:36.925533Z",
            },
            {
                "symbol": "MATIC/USD",
                "side": "sell",
                "price": 0.5147,
                "qty": 1136.19677815,
                "ord_type": "market",
                "trade_id": 4665847,
                "timestamp": "2023-09-25T07:49:36.925533Z",
            },
        ],
    }
    trades = kraken.parse_frame(json.dumps(frame), 9)
    assert [(t["symbol"], t["base"], t["quote"], t["trade_id"], t["side"], t["amount"]) for t in trades] == [
        ("MATIC/USD", "MATIC", "USD", "4665846", "buy", 6423.46326),
        ("MATIC/USD", "MATIC", "USD", "4665847", "sell", 1136.19677815),
    ]
    assert trades[0]["event_time"] == micros("2023-09-25T07:48:36.925533+00:00")
    for control in (
        {"channel": "heartbeat"},
        {
            "channel": "status",
            "type": "update",
            "data": [{"api_version": "v2", "connection_id": 1, "system": "online", "version": "2.0.0"}],
        },
        {
            "method": "subscribe",
            "result": {"channel": "trade", "snapshot": True, "symbol": "MATIC/USD"},
            "success": True,
            "time_in": "2023-09-25T09:04:31.742599Z",
            "time_out": "2023-09-25T09:04:31.742648Z",
        },
        {
            "method": "pong",
            "req_id": 1,
            "time_in": "2023-09-24T14:10:23.799685Z",
            "time_out": "2023-09-24T14:10:23.799703Z",
        },
    ):
        assert kraken.parse_frame(json.dumps(control), 9) == []


AGG = {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 5, "p": "1.5", "q": "2", "f": 1, "l": 1, "T": 1, "m": True}
CB_TRADE = {
    "trade_id": "1",
    "product_id": "BTC-USD",
    "price": "1",
    "size": "1",
    "side": "BUY",
    "time": "2024-01-01T00:00:00Z",
}
KR_TRADE = {
    "symbol": "BTC/USD",
    "side": "buy",
    "price": 1.0,
    "qty": 1.0,
    "ord_type": "market",
    "trade_id": 1,
    "timestamp": "2024-01-01T00:00:00Z",
}


def cb(**changes):
    return json.dumps({"channel": "market_trades", "events": [{"type": "update", "trades": [{**CB_TRADE, **changes}]}]})


def kr(**changes):
    return json.dumps({"channel": "trade", "type": "update", "data": [{**KR_TRADE, **changes}]})


@pytest.mark.parametrize(
    "parse, frame, reason",
    [
        (binance.parse_frame, "{not json", "malformed"),
        (binance.parse_frame, b"\xff\xfe", "malformed"),
        (binance.parse_frame, "[1, 2]", "malformed"),
        (binance.parse_frame, json.dumps({k: v for k, v in AGG.items() if k != "p"}), "missing_field"),
        (binance.parse_frame, json.dumps({**AGG, "p": "abc"}), "bad_price"),
        (binance.parse_frame, json.dumps({**AGG, "q": "NaN"}), "non_finite_amount"),
        (binance.parse_frame, json.dumps({**AGG, "m": 1}), "malformed"),
        (binance.parse_frame, json.dumps({**AGG, "a": "12x"}), "malformed"),
        (binance.parse_frame, json.dumps({**AGG, "e": "kline"}), "malformed"),
        (binance.parse_frame, json.dumps({"stream": "btcusdt@aggTrade", "data": "x"}), "malformed"),
        (coinbase.parse_frame, cb(side="BOTH"), "unknown_side"),
        (coinbase.parse_frame, cb(time="yesterday"), "malformed"),
        (coinbase.parse_frame, cb(size=None), "missing_field"),
        (coinbase.parse_frame, json.dumps({"channel": "market_trades", "events": {"trades": []}}), "malformed"),
        (kraken.parse_frame, kr(price=True), "bad_price"),
        (kraken.parse_frame, kr(timestamp="2024-01-01T00:00:00"), "malformed"),  # no zone
        (kraken.parse_frame, kr(trade_id=-3), "malformed"),
        (kraken.parse_frame, json.dumps({"type": "update"}), "missing_field"),
    ],
)
def test_malformed_frames_raise_a_dead_letter_reason(parse, frame, reason):
    with pytest.raises(FrameError) as caught:
        parse(frame, 1)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "parse, frame",
    [
        (binance.parse_frame, '{"error": {"code": 2, "msg": "Invalid request: unknown variant"}, "id": 1}'),
        (coinbase.parse_frame, '{"type": "error", "message": "failure to subscribe"}'),
        (
            kraken.parse_frame,
            '{"error": "Currency pair not supported FOO/BAR", "method": "subscribe", "success": false,'
            ' "symbol": "FOO/BAR", "time_in": "2024-01-01T00:00:00Z", "time_out": "2024-01-01T00:00:00Z"}',
        ),
    ],
)
def test_an_exchange_refusing_the_subscription_is_not_a_malformed_frame(parse, frame):
    with pytest.raises(ExchangeRejected):
        parse(frame, 1)


def test_trade_ids_see_duplicates_and_gaps_also_across_reconnects():
    ids = TradeIds(sequential=True, remember=4)
    assert ids.observe("A", "10") == (True, None)
    assert ids.observe("A", "11") == (True, None)
    assert ids.observe("A", "11") == (False, None)
    assert ids.observe("B", "11") == (True, None)  # per symbol
    assert ids.observe("A", "15") == (True, Gap("A", 12, 14))
    assert ids.observe("A", "13", live=False) == (True, None)  # a fetched trade never opens a gap
    assert ids.observe("A", "16") == (True, None)
    assert ids.observe("A", "10") == (True, None)  # forgotten: beyond the memory of 4 ids
    assert Gap("A", 12, 14).size == 3
    assert TradeIds(sequential=False).observe("A", "5") == (True, None)


def test_backoff_is_full_jitter_under_an_exponential_cap():
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(1))
    for attempt, bound in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (500, 4.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays) and max(delays) > bound * 0.8
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_symbols_are_checked_against_how_each_exchange_spells_them():
    assert FEEDS["binance"].canonical_symbols("btcusdt, ETHUSDT,btcusdt") == ["BTCUSDT", "ETHUSDT"]
    assert FEEDS["coinbase"].canonical_symbols("btc-usd") == ["BTC-USD"]
    assert FEEDS["kraken"].canonical_symbols("BTC/USD") == ["BTC/USD"]
    for exchange, text in [("binance", "BTC-USDT"), ("coinbase", "BTCUSD"), ("kraken", "XBTUSD"), ("kraken", " , ")]:
        with pytest.raises(ValueError):
            FEEDS[exchange].canonical_symbols(text)


# --- against fake exchanges and a real Kafka broker -------------------------------------------


def collect(
    bootstrap: str,
    feed,
    trades_topic: str,
    dead_letter_topic: str,
    *,
    symbols,
    channel,
    ws_url,
    rest_url=None,
    **settings,
) -> Collector:
    collector = Collector(
        [FeedSettings(feed, symbols, channel, ws_url, rest_url)],
        CollectorSettings(**{**FAST, **settings}),
        KafkaOutput(bootstrap, trades_topic, dead_letter_topic, topic("status")),
    )
    asyncio.run(collector.run())
    return collector


def assert_accounted(collector: Collector):
    c = collector.counters
    assert c.received + c.gap_trades_fetched == c.published + c.duplicates
    assert c.undelivered == 0


@pytest.mark.parametrize("channel", ["aggTrade", "trade"])
def test_binance_every_trade_arrives_through_drops_silence_duplicates_and_gaps(kafka_bootstrap, background, channel):
    btc, eth = make_trades("BTCUSDT", 100, 40), make_trades("ETHUSDT", 500, 20)
    malformed = [
        "{not json",
        json.dumps({"stream": "btcusdt@aggTrade", "data": {**AGG, "a": 990, "p": None}}),
        json.dumps({"stream": "btcusdt@aggTrade", "data": {**AGG, "a": 991, "p": "abc"}}),
    ]
    scripts = [
        [
            ("trades", refs("BTCUSDT", 100, 104) + refs("ETHUSDT", 500, 504)),
            ("trades", [("BTCUSDT", 103)]),
            ("trades", refs("BTCUSDT", 105, 109)),
            ("trades", refs("BTCUSDT", 115, 119)),  # 110..114 never sent live
            *[("raw", frame) for frame in malformed],
            ("drop",),
        ],
        [
            ("trades", refs("BTCUSDT", 118, 119)),  # already published before the drop
            ("trades", refs("BTCUSDT", 122, 129) + refs("ETHUSDT", 505, 512)),  # 120..121 lost across the reconnect
            ("silence",),
        ],
        [("trades", refs("BTCUSDT", 130, 139) + refs("ETHUSDT", 513, 519))],
    ]
    fake = FakeBinance(btc + eth, scripts, channel)
    rest = FakeBinanceRest(btc + eth, page_size=2, failures=[(429, {"Retry-After": "1"})])
    ws_url, rest_url = background.start(fake), background.start(rest)
    trades_topic, dead_topic = topic("trades"), topic("dead")

    collector = collect(
        kafka_bootstrap,
        FEEDS["binance"],
        trades_topic,
        dead_topic,
        symbols=("BTCUSDT", "ETHUSDT"),
        channel=channel,
        ws_url=ws_url,
        rest_url=rest_url,
        max_trades=60,
    )

    assert collector.stop_reason == "60 trades published"
    assert_exactly_the_fake_trades(published(kafka_bootstrap, trades_topic, 60), btc + eth, "binance")
    c = collector.counters
    assert (c.published, c.duplicates, c.gaps_detected, c.gap_trades_fetched, c.gaps_unfilled) == (60, 3, 2, 7, 0)
    assert (c.malformed, c.reconnects, c.stale_reconnects) == (3, 2, 1)
    assert_accounted(collector)
    assert [c["streams"] for c in fake.connections] == [[f"btcusdt@{channel}", f"ethusdt@{channel}"]] * 3
    path = "/api/v3/aggTrades" if channel == "aggTrade" else "/api/v3/historicalTrades"
    first, retry = rest.requests[:2]
    assert first["status"] == 429 and (retry["path"], retry["fromId"], retry["status"]) == (path, 110, 200)
    assert retry["at"] - first["at"] >= 1.0  # Retry-After honoured
    assert {(r["symbol"], r["fromId"]) for r in rest.requests} == {
        ("BTCUSDT", 110),
        ("BTCUSDT", 112),
        ("BTCUSDT", 114),
        ("BTCUSDT", 120),
    }  # pages of 2 until filled

    letters = [record for _, record in published(kafka_bootstrap, dead_topic, 3, "dead_letter")]
    assert [d["reason"] for d in letters] == ["malformed", "missing_field", "bad_price"]
    assert [d["payload_bytes"] for d in letters] == [frame.encode() for frame in malformed]
    assert {(d["stage"], d["source"], d["exchange"]) for d in letters} == {
        ("collect", collector.feeds[0].url, "binance")
    }
    assert [d["source_offset"] for d in letters] == sorted(d["source_offset"] for d in letters)


def test_binance_gap_that_rest_cannot_fill_is_counted_and_collection_goes_on(kafka_bootstrap, background):
    trades = make_trades("BTCUSDT", 1, 10)
    fake = FakeBinance(trades, [[("trades", refs("BTCUSDT", 1, 3)), ("trades", refs("BTCUSDT", 7, 10))]])
    rest = FakeBinanceRest(trades, failures=[(503, {})] * 10)
    ws_url, rest_url = background.start(fake), background.start(rest)
    trades_topic = topic("trades")

    collector = collect(
        kafka_bootstrap,
        FEEDS["binance"],
        trades_topic,
        topic("dead"),
        symbols=("BTCUSDT",),
        channel="aggTrade",
        ws_url=ws_url,
        rest_url=rest_url,
        rest_attempts=3,
        max_trades=7,
    )

    c = collector.counters
    assert (c.published, c.gaps_detected, c.gaps_unfilled, c.trades_unfilled, c.rest_retries) == (7, 1, 1, 3, 2)
    assert len(rest.requests) == 3
    assert sorted(int(r["trade_id"]) for _, r in published(kafka_bootstrap, trades_topic, 7)) == [1, 2, 3, 7, 8, 9, 10]


def test_coinbase_snapshots_overlap_after_a_drop_and_sides_flip_to_the_taker(kafka_bootstrap, background):
    btc, eth = make_trades("BTC-USD", 1000, 13), make_trades("ETH-USD", 2000, 3)
    bad_side = json.dumps(
        {
            "channel": "market_trades",
            "client_id": "",
            "timestamp": "2024-01-01T00:00:00Z",
            "sequence_num": 9,
            "events": [{"type": "update", "trades": [{**CB_TRADE, "side": "BOTH"}]}],
        }
    )
    scripts = [
        [
            ("snapshot", refs("BTC-USD", 1000, 1004)),
            ("trades", refs("BTC-USD", 1005, 1006) + [("ETH-USD", 2000)]),
            ("heartbeat",),
            ("trades", [("BTC-USD", 1007)]),
            ("raw", bad_side),
            ("drop",),
        ],
        [
            ("snapshot", refs("BTC-USD", 1003, 1009)),
            ("trades", refs("BTC-USD", 1010, 1012) + refs("ETH-USD", 2001, 2002)),
        ],
    ]
    fake = FakeCoinbase(btc + eth, scripts)
    ws_url = background.start(fake)
    trades_topic, dead_topic = topic("trades"), topic("dead")

    collector = collect(
        kafka_bootstrap,
        FEEDS["coinbase"],
        trades_topic,
        dead_topic,
        symbols=("BTC-USD", "ETH-USD"),
        channel="market_trades",
        ws_url=ws_url,
        max_trades=16,
    )

    assert_exactly_the_fake_trades(published(kafka_bootstrap, trades_topic, 16), btc + eth, "coinbase")
    c = collector.counters
    assert (c.published, c.duplicates, c.malformed, c.reconnects, c.gaps_detected) == (16, 5, 1, 1, 0)
    assert_accounted(collector)
    subscribed = [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]
    assert [c["received"] for c in fake.connections] == [subscribed, subscribed]  # resubscribed after the drop
    [(_, letter)] = published(kafka_bootstrap, dead_topic, 1, "dead_letter")
    assert (letter["reason"], letter["payload_string"], letter["exchange"]) == ("unknown_side", bad_side, "coinbase")


def test_kraken_silent_feed_trips_the_watchdog_which_resubscribes(kafka_bootstrap, background):
    trades = make_trades("BTC/USD", 1, 12)
    scripts = [
        [
            ("snapshot", refs("BTC/USD", 1, 4)),
            ("trades", refs("BTC/USD", 5, 6)),
            ("heartbeat",),
            ("trades", [("BTC/USD", 7)]),
            ("silence",),
        ],
        [("snapshot", refs("BTC/USD", 5, 9)), ("trades", refs("BTC/USD", 10, 12))],
    ]
    fake = FakeKraken(trades, scripts)
    ws_url = background.start(fake)
    trades_topic = topic("trades")

    started = time.monotonic()
    collector = collect(
        kafka_bootstrap,
        FEEDS["kraken"],
        trades_topic,
        topic("dead"),
        symbols=("BTC/USD",),
        channel="trade",
        ws_url=ws_url,
        max_trades=12,
    )

    assert time.monotonic() - started >= 1.0  # the watchdog waited for its limit
    assert_exactly_the_fake_trades(published(kafka_bootstrap, trades_topic, 12), trades, "kraken")
    c = collector.counters
    assert (c.published, c.duplicates, c.stale_reconnects, c.reconnects, c.malformed) == (12, 3, 1, 1, 0)
    assert_accounted(collector)
    subscribe = {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True}}
    assert [c["received"] for c in fake.connections] == [[subscribe], [subscribe]]
    statuses = [record for _, record in published(kafka_bootstrap, collector.output.status_topic, 4, "feed_status")]
    assert [(r["status"], r["reason"]) for r in statuses] == [
        ("connected", None),
        ("disconnected", "stale"),
        ("resubscribed", None),
        ("disconnected", "stopped"),
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--exchange", "ftx", "--symbols", "BTCUSD"], "unknown exchange 'ftx'"),
        (["--exchange", "binance", "--symbols", "BTC/USDT"], "is not a binance symbol"),
        (["--exchange", "binance", "--symbols", "BTCUSDT", "--channel", "depth"], "choose: aggTrade, trade"),
        (["--exchange", "kraken", "--symbols", "BTC/USD", "--rest-url", "http://x"], "not fetched over REST"),
        (["--exchange", "kraken", "--symbols", "BTC/USD", "--ws-url", "http://x"], "must start with ws://"),
        (["--exchange", "coinbase", "--symbols", "BTC-USD", "--stale-after", "soon"], "--stale-after"),
        (["--exchange", "coinbase", "--symbols", "BTC-USD", "--backoff-base", "0"], "--backoff-base"),
        (["--exchange", "coinbase", "--symbols", "BTC-USD", "--max-trades", "0"], "--max-trades must be positive"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, options, message):
    assert run_collect(collect_args(*options, "--kafka", "127.0.0.1:9")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_unreachable_broker_is_a_clear_error():
    with pytest.raises(KafkaUnreachable, match="cannot reach Kafka at 127.0.0.1:9"):
        check_reachable("127.0.0.1:9", timeout=1)


def test_an_exchange_refusing_a_symbol_exits_2_with_its_reason(kafka_bootstrap, background, capsys):
    fake = FakeKraken(make_trades("BTC/USD", 1, 3), [[("trades", refs("BTC/USD", 1, 3))]], unknown_symbols={"FOO/BAR"})
    ws_url = background.start(fake)
    code = run_collect(
        collect_args(
            "--exchange",
            "kraken",
            "--symbols",
            "BTC/USD,FOO/BAR",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            topic("trades"),
            "--ws-url",
            ws_url,
            "--max-seconds",
            "20",
            "--no-progress",
        )
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "kraken refused subscribe FOO/BAR: Currency pair not supported FOO/BAR" in captured.err
    assert "Traceback" not in captured.err and "trades published" in captured.out


def test_sigterm_stops_cleanly_and_everything_published_is_in_kafka(kafka_bootstrap, background):
    trades = make_trades("BTCUSDT", 1, 20_000)
    fake = FakeBinance(trades, [[("drip", refs("BTCUSDT", 1, 20_000), 0.002)]])
    ws_url = background.start(fake)
    trades_topic = topic("trades")
    process = subprocess.Popen(
        [
            CLI,
            "collect",
            "--exchange",
            "binance",
            "--symbols",
            "BTCUSDT",
            *kafka_options(kafka_bootstrap, trades_topic),
            "--ws-url",
            ws_url,
            "--no-progress",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(fake.sent) < 300 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("│") for line in out.splitlines())
        if len(cells) == 4
    }
    assert rows["stopped because"] == "received SIGTERM" and rows["undelivered to Kafka"] == "0"
    count = int(rows["trades published"].replace(",", ""))
    assert count >= 300
    ids = [int(r["trade_id"]) for _, r in published(kafka_bootstrap, trades_topic, count)]
    assert ids == list(range(1, count + 1))  # flushed, in order, nothing lost or doubled
