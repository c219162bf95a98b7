"""Canonical instruments: every trade carries canonical base and quote beside its exchange's own
symbol; the shipped table maps the major pairs, a user file extends and overrides it, a hostile
user file is one clear error, and unknown symbols keep a best-effort pair and are counted."""

from __future__ import annotations

import csv
import json
import pickle
import re
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.accounting import Accounting
from io_connectors.avro_wire import encode
from io_connectors.formats.kafka_avro import parse_avro_messages
from io_connectors.instruments import (
    SHIPPED_TABLE,
    InstrumentsError,
    canonical_asset,
    canonical_pair,
    instruments_digest,
    load_instruments,
    read_instruments_file,
    with_canonical_instruments,
)
from io_connectors.raw_batch import RawBatch
from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import read_raw_batches
from tests.support.helpers import run_trades_to_bars, trades_to_parquet
from tests.support.paths import CLI
from transforms.bar_spec import BarSpec
from transforms.trade_batch import make_trade_batch

US_2024 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
ISSUE_EXAMPLES = [
    ("binance", "BTCUSDT", "BTC", "USDT"),
    ("coinbase", "BTC-USD", "BTC", "USD"),
    ("kraken", "XBT/USD", "BTC", "USD"),
    ("kraken", "XXBTZUSD", "BTC", "USD"),
    ("kraken", "XETHZEUR", "ETH", "EUR"),
    ("kraken", "XDGUSD", "DOGE", "USD"),
    ("kraken", "XBTUSD", "BTC", "USD"),
    ("kraken", "BTC/USD", "BTC", "USD"),
    ("kraken", "XETHXXBT", "ETH", "BTC"),
    ("binance", "ETHBTC", "ETH", "BTC"),
    ("binance", "BTCFDUSD", "BTC", "FDUSD"),
    ("coinbase", "ETH-EUR", "ETH", "EUR"),
]


def shipped_rows() -> list[dict]:
    with open(SHIPPED_TABLE, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------- the shipped table


@pytest.mark.parametrize("exchange, symbol, base, quote", ISSUE_EXAMPLES)
def test_the_shipped_table_maps_the_issues_examples(exchange, symbol, base, quote):
    assert canonical_pair(load_instruments(), exchange, symbol) == ((base, quote), True)


def test_every_shipped_row_is_well_formed_and_canonical():
    rows = shipped_rows()
    assert list(rows[0]) == ["exchange", "symbol", "base", "quote"]
    for row in rows:
        exchange, symbol, base, quote = row["exchange"], row["symbol"], row["base"], row["quote"]
        assert re.fullmatch(r"[A-Z0-9]{2,10}", base) and re.fullmatch(r"[A-Z0-9]{2,10}", quote), row
        assert canonical_asset(base, "kraken") == base and canonical_asset(quote, "kraken") == quote, row
        assert base != quote, row
        # The symbol spells its pair in the exchange's own way, aliases aside.
        if exchange == "binance":
            assert symbol == base + quote, row
        elif exchange == "coinbase":
            assert symbol == f"{base}-{quote}", row
        else:
            assert exchange == "kraken", row
            kraken_spellings = {
                "BTC": {"BTC", "XBT", "XXBT"},
                "DOGE": {"DOGE", "XDG"},
                "USD": {"USD", "ZUSD"},
                "EUR": {"EUR", "ZEUR"},
                "GBP": {"GBP", "ZGBP"},
                "CAD": {"CAD", "ZCAD"},
                "JPY": {"JPY", "ZJPY"},
            }

            def kraken_spellings_of(asset):
                return kraken_spellings.get(asset, {asset, "X" + asset})

            assert any(
                symbol in (b + q, f"{b}/{q}") for b in kraken_spellings_of(base) for q in kraken_spellings_of(quote)
            ), row
    per_exchange = {e: sum(r["exchange"] == e for r in rows) for e in ("binance", "coinbase", "kraken")}
    assert min(per_exchange.values()) >= 30, per_exchange
    keys = [(r["exchange"], r["symbol"]) for r in rows]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------------- user files


def write(tmp_path, text: str | bytes, name: str = "instruments.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def test_a_user_file_extends_and_overrides_the_table(tmp_path):
    path = write(
        tmp_path,
        "exchange,symbol,base,quote\n"
        "binance,NEWCOINUSDT,NEWCOIN,USDT\n"
        "Kraken,xbtusd,XBT,USD\n"  # case-insensitive keys; the user's spelling wins
        "\n"
        "binance,NEWCOINUSDT,NEWCOIN,USDT\n",
    )  # the same row again is no conflict
    table = load_instruments(path)
    assert canonical_pair(table, "binance", "NEWCOINUSDT") == (("NEWCOIN", "USDT"), True)
    assert canonical_pair(table, "kraken", "XBTUSD") == (("XBT", "USD"), True)
    assert canonical_pair(table, "kraken", "XBT/USD") == (("BTC", "USD"), True)  # the rest stays
    assert len(table) == len(load_instruments()) + 1


def test_the_digest_of_the_table_changes_with_the_user_file(tmp_path):
    same = write(tmp_path, "exchange,symbol,base,quote\nkraken,XBTUSD,BTC,USD\n", "same.csv")
    other = write(tmp_path, "exchange,symbol,base,quote\nkraken,XBTUSD,XBT,USD\n", "other.csv")
    assert instruments_digest() == instruments_digest(same) != instruments_digest(other)
    with pytest.raises(InstrumentsError):
        instruments_digest(write(tmp_path, "exchange,symbol\n", "bad.csv"))


HOSTILE = {
    "empty file": ("", "instruments.csv: empty, expected the header exchange,symbol,base,quote"),
    "no header": ("binance,BTCUSDT,BTC,USDT\n", "line 1: expected the header"),
    "other header": ("exchange,symbol,base\nbinance,BTCUSDT,BTC\n", "line 1: expected the header"),
    "three fields": (
        "exchange,symbol,base,quote\nbinance,AUSDT,A,USDT\nbinance,BUSDT,B\n",
        "line 3: expected exchange,symbol,base,quote, got 3 field(s)",
    ),
    "five fields": (
        "exchange,symbol,base,quote\nbinance,AUSDT,A,USDT,x\n",
        "line 2: expected exchange,symbol,base,quote, got 5",
    ),
    "empty field": ("exchange,symbol,base,quote\nbinance,AUSDT, ,USDT\n", "line 2: base is empty"),
    "conflicting duplicate": (
        "exchange,symbol,base,quote\nbinance,AUSDT,A,USDT\nBINANCE,ausdt,AU,SDT\n",
        "line 3: BINANCE ausdt is listed again as AU/SDT, before as A/USDT",
    ),
    "too long": ("exchange,symbol,base,quote\nbinance," + "A" * 101 + ",A,USDT\n", "line 2: symbol is longer than 100"),
    "not UTF-8": (b"exchange,symbol,base,quote\nbinance,AUSDT,A,USDT\nbinance,\xff\xfe,A,USDT\n", "line 3: not UTF-8"),
    "NUL byte": ("exchange,symbol,base,quote\nbinance,A\x00,A,USDT\n", "line 2: holds a NUL byte"),
    "control character": ("exchange,symbol,base,quote\nbinance,A\x1b,A,USDT\n", "line 2: symbol holds a control"),
    "unterminated quote": ('exchange,symbol,base,quote\nbinance,"AUSDT,A,USDT\n', "not CSV"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_user_file_is_one_clear_error(tmp_path, case):
    text, expected = HOSTILE[case]
    path = write(tmp_path, text)
    with pytest.raises(InstrumentsError) as error:
        parser_for(SOURCES["binance-aggtrades"], instruments=path)
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith("instruments.csv")


@pytest.mark.parametrize("case", ["directory", "missing"])
def test_a_user_file_that_is_no_file_is_one_clear_error(tmp_path, case):
    path = tmp_path / "instruments.csv"
    if case == "directory":
        path.mkdir()
    with pytest.raises(InstrumentsError, match="is a directory" if case == "directory" else "no such file"):
        with_canonical_instruments(SOURCES["binance-aggtrades"].parser, str(path))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.lists(st.text(st.characters(codec="utf-8"), max_size=8), max_size=6), max_size=6).map(
            lambda rows: "exchange,symbol,base,quote\n" + "\n".join(",".join(r) for r in rows)
        ),
    )
)
def test_any_user_file_reads_or_is_one_instruments_error(tmp_path_factory, content):
    path = write(tmp_path_factory.mktemp("any"), content)
    try:
        table = read_instruments_file(path)
    except InstrumentsError as error:
        assert "\n" not in str(error) and str(error)
    else:
        assert all(len(value) <= 100 and value for pair in table.items() for part in pair for value in part)


# ---------------------------------------------------------------------- applying the mapping

POOL = [
    ("binance", "BTCUSDT"),
    ("binance", "NEWCOINUSDT"),
    ("coinbase", "BTC-USD"),
    ("coinbase", "FOO-EUR"),
    ("kraken", "XBT/USD"),
    ("kraken", "XXBTZUSD"),
    ("kraken", "ABCXBT"),
    ("kraken", "XDG/EUR"),
    ("bitmex", "XBTUSD"),
    ("binance", "X"),
    ("kraken", None),
    ("", "BTCUSDT"),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(POOL), st.sampled_from([None, "xbt", "ETH"]), st.sampled_from([None, "ZUSD", "USDT"])
        ),
        min_size=1,
        max_size=40,
    )
)
def test_each_row_of_a_mixed_batch_gets_its_own_pair(rows):
    """The batch is mapped by its distinct values at once; each row must come out as mapping it alone would."""
    parser = with_canonical_instruments(lambda batch: (batch, []))
    batch = make_trade_batch(
        exchange=[r[0][0] for r in rows],
        symbol=[r[0][1] for r in rows],
        base=[r[1] for r in rows],
        quote=[r[2] for r in rows],
        trade_id=[str(i) for i in range(len(rows))],
        price=1.0,
        amount=1.0,
        side="buy",
        event_time=US_2024,
        source="test",
    )
    mapped, _ = parser(batch)
    table = load_instruments()
    expected = []
    for (exchange, symbol), base, quote in rows:
        expected.append(
            (base, quote) if not exchange or not symbol else canonical_pair(table, exchange, symbol, base, quote)[0]
        )
    assert list(zip(mapped.column("base").to_pylist(), mapped.column("quote").to_pylist())) == expected
    assert mapped.drop_columns(["base", "quote"]).equals(batch.drop_columns(["base", "quote"]))


@pytest.mark.parametrize(
    "exchange, symbol, carried, expected",
    [
        ("kraken", "XXBTZUSD", ("XBT", "ZUSD"), ("BTC", "USD")),  # the table wins over the record's spelling
        ("binance", "BTCUSDT", ("WRONG", "PAIR"), ("BTC", "USDT")),
        ("kraken", "ABCXBT", ("abc", "xbt"), ("ABC", "BTC")),  # unknown: the record's pair, made canonical
        ("kraken", "ABCXBT", (None, None), ("ABC", "BTC")),  # unknown, no pair: a best-effort split
        ("kraken", "XXLMZEUR", (None, None), ("XLM", "EUR")),
        ("kraken", "XTZUSD", (None, None), ("XTZ", "USD")),  # XTZ is no legacy code
        ("binance", "NEWCOINFDUSD", (None, None), ("NEWCOIN", "FDUSD")),
        ("coinbase", "FOO-BAR", (None, None), ("FOO", "BAR")),
        ("bitmex", "XBTUSD", (None, None), ("BTC", "USD")),
        ("binance", "???", (None, None), (None, None)),  # no split at all: null
    ],
)
def test_which_pair_a_trade_gets(exchange, symbol, carried, expected):
    assert canonical_pair(load_instruments(), exchange, symbol, *carried)[0] == expected


def test_the_stream_parser_wrapped_gives_canonical_pairs():
    def message(symbol, base, quote):
        return encode(
            {
                "exchange": "kraken",
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "trade_id": "1",
                "price": 1.0,
                "amount": 1.0,
                "side": "buy",
                "event_time": US_2024,
                "receive_time": None,
            },
            "trade",
        )

    raw = RawBatch(
        "trades/0",
        payloads=[message("XBT/USD", "XBT", "USD"), message("XDG/USD", "XDG", "USD"), message("NEW/XBT", None, None)],
        line_numbers=np.array([5, 6, 7]),
    )
    trades, dead = with_canonical_instruments(parse_avro_messages)(raw)
    assert dead == [] and trades.column("symbol").to_pylist() == ["XBT/USD", "XDG/USD", "NEW/XBT"]
    assert list(zip(trades.column("base").to_pylist(), trades.column("quote").to_pylist())) == [
        ("BTC", "USD"),
        ("DOGE", "USD"),
        ("NEW", "BTC"),
    ]


def test_the_wrapped_parser_pickles_with_its_table(tmp_path):
    path = write(tmp_path, "exchange,symbol,base,quote\nbinance,NEWCOINUSDT,NEW,USDT\n")
    parser = parser_for(SOURCES["binance-aggtrades"], symbol="NEWCOINUSDT", instruments=path)
    (tmp_path / "instruments.csv").unlink()  # a remote worker never sees the user's file
    copy = pickle.loads(pickle.dumps(parser))
    raw = RawBatch(
        "NEWCOINUSDT-aggTrades-2024-01-01.csv",
        payloads=[b"1,2.5,1.0,1,1,1704067200000,true,true"],
        line_numbers=np.array([1]),
    )
    trades, dead = copy(raw)
    assert dead == [] and (trades.column("base")[0].as_py(), trades.column("quote")[0].as_py()) == ("NEW", "USDT")


# ---------------------------------------------------------------------- unknown symbols in a run


def trade_rows() -> list[dict]:
    """Known and unknown instruments, each with one trade whose bad price makes it a dead letter
    (a normalized file's dead letter carries the parsed trade, so its base and quote show)."""
    rows = []
    for exchange, symbol, base, quote, n in [
        ("kraken", "XXBTZUSD", "XBT", "ZUSD", 5),
        ("binance", "BTCUSDT", None, None, 4),
        ("kraken", "ABCXBT", None, None, 3),
        ("coinbase", "FOO-USD", "foo", "usd", 2),
        ("binance", "NEWCOINUSDT", None, None, 1),
    ]:
        for i in range(n):
            rows.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "base": base,
                    "quote": quote,
                    "trade_id": str(i),
                    "price": -1.0 if i == 0 else 10.0 + i,
                    "amount": 1.0,
                    "side": "buy",
                    "event_time": US_2024 + i * 20_000_000,
                }
            )
    return rows


def write_trades(path) -> None:
    trades_to_parquet(trade_rows(), path, row_group_size=4)


EXPECTED_PAIRS = {
    "XXBTZUSD": ["BTC", "USD"],
    "BTCUSDT": ["BTC", "USDT"],
    "ABCXBT": ["ABC", "BTC"],
    "FOO-USD": ["FOO", "USD"],
    "NEWCOINUSDT": ["NEWCOIN", "USDT"],
}
EXPECTED_UNKNOWN = {"kraken:ABCXBT": 3, "coinbase:FOO-USD": 2, "binance:NEWCOINUSDT": 1}


def test_unknown_symbols_are_split_and_counted_in_the_pipeline(tmp_path):
    path = tmp_path / "trades.parquet"
    write_trades(path)
    raws = list(read_raw_batches(SOURCES["parquet"], str(path), batch_rows=4))
    _, dead, counters = run_trades_to_bars(raws, BarSpec.of("1m"), parser_for(SOURCES["parquet"]))
    pairs = {
        json.loads(d["payload_string"])["symbol"]: [json.loads(d["payload_string"])[k] for k in ("base", "quote")]
        for d in dead
    }
    assert pairs == EXPECTED_PAIRS
    accounting = Accounting.from_counters(counters)
    assert accounting.instrument_unknown_records == sum(EXPECTED_UNKNOWN.values())
    assert accounting.unknown_instruments == EXPECTED_UNKNOWN and accounting.distinct_unknown_instruments == 3


@pytest.mark.pipeline
def test_a_chunked_backfill_sums_unknown_symbols_over_its_chunks(tmp_path):
    path = tmp_path / "trades.parquet"
    write_trades(path)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            CLI,
            "backfill",
            "--source",
            "parquet",
            "--input",
            str(path),
            "--interval",
            "1m",
            "--out",
            str(out),
            "--no-progress",
            "--chunk-rows",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["chunks"] > 1 and summary["reconciled"]
    assert summary["instrument_unknown_records"] == sum(EXPECTED_UNKNOWN.values())
    assert summary["unknown_instruments"] == EXPECTED_UNKNOWN
    dead = pq.read_table(out / "dead_letter").to_pylist()
    assert {
        json.loads(d["payload_string"])["symbol"]: [json.loads(d["payload_string"])[k] for k in ("base", "quote")]
        for d in dead
    } == EXPECTED_PAIRS


@pytest.mark.pipeline
def test_the_instruments_option_reaches_the_backfill_and_a_bad_file_is_one_line(tmp_path):
    """--instruments maps a symbol the shipped table lacks in a real backfill (its trades are no
    longer counted unknown); a flawed file stops backfill, replay and stream before anything
    runs, with one line and exit 2."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).parent / "cryptobeam")
    trades = tmp_path / "in" / "FOOBAR.csv"
    trades.parent.mkdir()
    trades.write_text("1381095255,122.00000,0.10000000\n1381179030,123.0,0.2\n")
    mine = tmp_path / "mine.csv"
    mine.write_text("exchange,symbol,base,quote\nkraken,FOOBAR,FOO,BAR\n")

    def unknown_records(out, *extra):
        result = subprocess.run(
            [
                cli,
                "backfill",
                "--source",
                "kraken-trades",
                "--input",
                str(trades),
                "--out",
                str(out),
                "--no-progress",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return json.loads((out / "_SUMMARY.json").read_text())["instrument_unknown_records"]

    assert unknown_records(tmp_path / "without") == 2
    assert unknown_records(tmp_path / "with", "--instruments", str(mine)) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("exchange,symbol,base\nkraken,XBTUSD,BTC\n")
    for command in (
        ["backfill", "--source", "kraken-trades", "--input", str(trades), "--out", str(tmp_path / "b")],
        ["replay", "--source", "kraken-trades", "--input", str(trades), "--kafka", "127.0.0.1:1"],
        ["stream", "--kafka", "127.0.0.1:1", "--out", str(tmp_path / "s")],
    ):
        result = subprocess.run([cli, *command, "--instruments", str(bad)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "bad.csv" in result.stderr and "Traceback" not in result.stderr, command
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
