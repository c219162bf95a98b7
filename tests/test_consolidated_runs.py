"""Consolidated bars end to end through the installed command, on three venues' files in their
own formats (Binance aggTrades CSV, Coinbase JSON lines, Kraken CSV) across a UTC midnight: the
backfill equals the independent reference read from the files, a run chunked by day equals a whole
one, ``validate`` passes and the summary names the venue that drifted; bad options are one line
and exit 2; and a stream of the same trades replayed through Kafka with disorder and late trades
ends with the backfill's consolidated bars and quality rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from io_connectors.bar_reader import final_bars
from tests.support import consolidation_reference as reference
from tests.support.commands import cli
from tests.support.helpers import (
    CONSOLIDATED_BESIDE_TIME_BARS,
    micros_of,
    three_venue_trades,
    write_three_venue_inputs,
)
from tests.support.outputs import summary, without_panes
from tests.support.streams import finish, new_topic, start_stream

START = datetime(2024, 1, 1, 23, 30, tzinfo=timezone.utc)
SECONDS = 3600
MINUTE = 60_000_000
DRIFT = (datetime(2024, 1, 1, 23, 50, tzinfo=timezone.utc), datetime(2024, 1, 2, 0, 5, tzinfo=timezone.utc))
OPTIONS = CONSOLIDATED_BESIDE_TIME_BARS
TABLES = ("bars_consolidated", "quality")


_micros = micros_of


def _venue_trades(seed: int) -> dict[str, list[tuple[datetime, float, float]]]:
    """(time, price, amount) per venue, a trade every few seconds; Kraken 5 % high for a while."""
    return three_venue_trades(seed, START, SECONDS, DRIFT, steps=(1.5, 2.0, 3.25, 4.0), amounts=(0.01, 0.25, 0.5, 1.5))


_write_inputs = write_three_venue_inputs


def _reference(venues: dict, statuses: list[tuple] = ()) -> dict:
    names = {
        "binance": ("binance:BTCUSDT", "USDT"),
        "coinbase": ("coinbase:BTC-USD", "USD"),
        "kraken": ("kraken:XBTUSD", "USD"),
    }
    trades = [
        (names[v][0], "BTC", names[v][1], f"{v}{i}", _micros(t), p, a)
        for v, rows in venues.items()
        for i, (t, p, a) in enumerate(rows)
    ]
    return reference.reference_bars(trades, MINUTE, quote_as={"USDT": "USD"}, statuses=statuses)


def _as_reference(bars: list[dict]) -> dict:
    return {(bar["symbol"], _micros(bar["window_start"])): {k: bar[k] for k in reference_fields()} for bar in bars}


def reference_fields() -> tuple[str, ...]:
    return ("price", "constituents", "excluded", "coverage", "trade_count", "included_trade_count")


@pytest.fixture(scope="module")
def three_venues(tmp_path_factory):
    folder = tmp_path_factory.mktemp("venues")
    venues = _venue_trades(seed=4)
    return folder, _write_inputs(folder, venues), venues


@pytest.fixture(scope="module")
def whole_backfill(three_venues):
    folder, inputs, _venues = three_venues
    out = folder / "whole"
    result = cli("backfill", *inputs, "--out", str(out), "--no-progress", *OPTIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_a_backfill_of_three_venues_equals_the_reference_and_validates(three_venues, whole_backfill):
    _folder, _inputs, venues = three_venues
    out, printed = whole_backfill
    bars = final_bars(str(out), table="bars_consolidated")
    assert _as_reference(bars) == _reference(venues)
    drifted = [bar for bar in bars if json.loads(bar["excluded"]) == {"kraken:XBTUSD": "deviation"}]
    assert len(drifted) >= 14 and {bar["symbol"] for bar in bars} == {"BTC/USD"}
    assert {bar["window_start"].date().isoformat() for bar in bars} == {"2024-01-01", "2024-01-02"}
    quality = final_bars(str(out), table="quality")
    assert {(row["exchange"], row["symbol"]) for row in quality} == {
        ("binance", "BTCUSDT"),
        ("coinbase", "BTC-USD"),
        ("kraken", "XBTUSD"),
    }
    assert sum(row["trade_count"] for row in quality) == sum(len(rows) for rows in venues.values())
    assert "worst venues" in printed and "kraken:XBTUSD" in printed and "deviation" in printed
    run = json.loads((out / "_SUMMARY.json").read_text())
    assert run["reconciled"] and run["venue_exclusions"]["kraken:XBTUSD|deviation"] == len(drifted)
    checked = cli("validate", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_run_chunked_by_day_equals_a_whole_run(three_venues, whole_backfill):
    folder, inputs, _venues = three_venues
    out = folder / "chunked"
    result = cli("backfill", *inputs, "--out", str(out), "--no-progress", "--chunk", "1d", "--workers", "2", *OPTIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    for table in TABLES:
        assert without_panes(final_bars(str(out), table=table)) == without_panes(
            final_bars(str(whole_backfill[0]), table=table)
        ), table


@pytest.mark.pipeline
def test_filled_bars_never_count_as_trade_prices(tmp_path):
    """Forward-filled time bars (``--fill-gaps``) sit beside the consolidated bars, which are
    computed from trades alone: they are the same with gaps filled or not."""
    venues = _venue_trades(seed=5)
    quiet = (START + timedelta(minutes=20), START + timedelta(minutes=24))  # Kraken trades nothing for 4 minutes
    venues["kraken"] = [t for t in venues["kraken"] if not quiet[0] <= t[0] < quiet[1]]
    inputs = _write_inputs(tmp_path / "in", venues)
    outs = {}
    for name, extra in (("plain", ()), ("filled", ("--fill-gaps",))):
        outs[name] = tmp_path / name
        result = cli("backfill", *inputs, "--out", str(outs[name]), "--no-progress", *extra, *OPTIONS)
        assert result.returncode == 0, result.stdout + result.stderr
    assert sum(bar["is_filled"] for bar in final_bars(str(outs["filled"]))) == 4
    for table in TABLES:
        assert without_panes(final_bars(str(outs["filled"]), table=table)) == without_panes(
            final_bars(str(outs["plain"]), table=table)
        ), table
    assert _as_reference(final_bars(str(outs["filled"]), table="bars_consolidated")) == _reference(venues)


@pytest.mark.parametrize(
    "options, message",
    [
        (("--bars", "consolidated:7m"), "must divide a day"),
        (("--bars", "time:1m", "--bars", "consolidated:90s"), "whole number of the run's 1m windows"),
        (("--bars", "consolidated:1m", "--partitions", "7"), "equal whole-microsecond partitions"),
        (("--bars", "consolidated:1m", "--deviation", "two"), "bad --deviation"),
        (("--bars", "consolidated:1m", "--quote-equivalent", "USDT"), "bad --quote-equivalent"),
        (("--bars", "consolidated:1m", "--min-constituents", "0"), "at least 1"),
        (("--bars", "consolidated:1m", "--bars", "consolidated:5m"), "given twice"),
    ],
)
def test_a_bad_consolidated_option_is_one_line_and_exit_2(three_venues, tmp_path, options, message):
    _folder, inputs, _venues = three_venues
    result = cli("backfill", *inputs, "--out", str(tmp_path / "out"), "--no-progress", *options)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_stream_of_three_venues_ends_with_the_backfills_consolidated_bars(
    kafka_bootstrap, three_venues, whole_backfill, tmp_path
):
    _folder, inputs, _venues = three_venues
    topic = new_topic(kafka_bootstrap, 2)
    out = tmp_path / "stream"
    stream = start_stream(kafka_bootstrap, topic, out, *OPTIONS, "--allowed-lateness", "10m", "--stop-when-idle", "5s")
    replayed = cli(
        "replay",
        *inputs,
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--no-progress",
        "--disorder",
        "3s",
        "--late-fraction",
        "0.02",
        "--late-by",
        "4m",
        "--seed",
        "7",
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    finish(stream, out)
    for table in TABLES:
        assert without_panes(final_bars(str(out), table=table)) == without_panes(
            final_bars(str(whole_backfill[0]), table=table)
        ), table
    run = summary(out)
    assert run["reconciled"], run["problems"]
    assert run["venue_exclusions"].get("kraken:XBTUSD|deviation")


DISCONNECTION = (
    datetime(2024, 1, 1, 23, 40, 30, tzinfo=timezone.utc),
    datetime(2024, 1, 1, 23, 45, 10, tzinfo=timezone.utc),
)


def _publish_statuses(bootstrap: str, topic: str) -> list[tuple]:
    """Coinbase's collector reports its feed down for a few minutes, then back; each record is
    sent twice, as Kafka may re-deliver. Returns (venue, time us, status) as the reference takes them."""
    from confluent_kafka import Producer

    from io_connectors.avro_wire import encode

    events = [
        ("binance", "BTCUSDT", START, "connected"),
        ("coinbase", "BTC-USD", START, "connected"),
        ("kraken", "XBTUSD", START, "connected"),
        ("coinbase", "BTC-USD", DISCONNECTION[0], "disconnected"),
        ("coinbase", "BTC-USD", DISCONNECTION[1], "resubscribed"),
    ]
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for exchange, symbol, moment, status in events * 2:
        record = {
            "exchange": exchange,
            "symbol": symbol,
            "base": "BTC",
            "quote": "USDT" if exchange == "binance" else "USD",
            "status": status,
            "event_time": _micros(moment),
            "reason": "closed" if status == "disconnected" else None,
            "collector": "test:1",
        }
        producer.produce(
            topic, encode(record, "feed_status"), key=f"{exchange}:{symbol}", timestamp=_micros(moment) // 1000
        )
    assert producer.flush(30) == 0
    return [(f"{exchange}:{symbol}", _micros(moment), status) for exchange, symbol, moment, status in events]


def test_a_stream_excludes_a_venue_while_its_collector_reports_it_disconnected(kafka_bootstrap, three_venues, tmp_path):
    _folder, inputs, venues = three_venues
    topic, status_topic = new_topic(kafka_bootstrap, 2), new_topic(kafka_bootstrap, 1)
    statuses = _publish_statuses(kafka_bootstrap, status_topic)
    out = tmp_path / "stream"
    stream = start_stream(
        kafka_bootstrap, topic, out, *OPTIONS, "--status-topic", status_topic, "--stop-when-idle", "5s"
    )
    replayed = cli("replay", *inputs, "--kafka", kafka_bootstrap, "--topic", topic, "--no-progress")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    finish(stream, out)
    bars = final_bars(str(out), table="bars_consolidated")
    assert _as_reference(bars) == _reference(venues, statuses)
    down = [bar for bar in bars if json.loads(bar["excluded"]).get("coinbase:BTC-USD") == "disconnected"]
    assert len(down) == 5, [bar["window_start"] for bar in down]  # the windows ending 23:41 to 23:45
    run = summary(out)
    assert run["reconciled"], run["problems"]
    assert run["feed_status"] == {"records_in": 10, "trades_parsed": 10, "unique_trades": 5, "duplicates": 5}
    assert run["venue_exclusions"]["coinbase:BTC-USD|disconnected"] == 5


def test_a_status_topic_needs_consolidated_bars(kafka_bootstrap, tmp_path):
    result = cli(
        "stream",
        "--kafka",
        kafka_bootstrap,
        "--topic",
        "trades",
        "--status-topic",
        "feed_status",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2 and "add --bars consolidated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
