"""Each input format, written here from the exchange's documented layout, parses to normalized trades;
malformed lines become dead letters with their original bytes and line numbers."""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import datetime, timedelta, timezone

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from io_connectors.files import line_batches
from io_connectors.formats import binance
from io_connectors.formats.binance import AGG_TRADES
from io_connectors.formats.clean_csv import read_clean_batch
from io_connectors.raw_batch import RawBatch
from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import read_raw_batches
from schemas import parsed_avro_schema

MS_2019 = 1570752000565  # 2019-10-11T00:00:00.565Z in ms
US_2025 = 1735689600123456  # 2025-01-01T00:00:00.123456Z in us


def parse_file(source_name: str, path, **options):
    source = SOURCES[source_name]
    parser = parser_for(source, **options)
    trades, dead = [], []
    for raw in read_raw_batches(source, str(path), batch_rows=3):  # tiny batches: exercise batch boundaries
        table, letters = parser(raw)
        trades.extend(table.to_pylist())
        dead.extend(letters)
    return trades, dead


def write_zip(path, member: str, text: str):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)
    return path


def micros(dt) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


# ---------------------------------------------------------------------- Binance aggTrades
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match"


def test_binance_aggtrades_zip_without_header_ms(tmp_path):
    text = (
        f"26129,0.01633102,4.70443515,27781,27781,{MS_2019},True,True\n"
        f"26130,0.01633103,0.5,27782,27783,{MS_2019 + 1},False,True\n"
    )
    path = write_zip(tmp_path / "XRPETH-aggTrades-2019-10-11.zip", "XRPETH-aggTrades-2019-10-11.csv", text)
    trades, dead = parse_file("binance-aggtrades", path)
    assert dead == []
    first, second = trades
    assert (first["exchange"], first["symbol"], first["base"], first["quote"]) == ("binance", "XRPETH", "XRP", "ETH")
    assert first["trade_id"] == "26129" and first["price"] == 0.01633102 and first["amount"] == 4.70443515
    assert first["side"] == "sell"  # buyer was maker -> the taker sold
    assert second["side"] == "buy"
    assert micros(first["event_time"]) == MS_2019 * 1000
    assert first["source"].endswith("XRPETH-aggTrades-2019-10-11.zip!XRPETH-aggTrades-2019-10-11.csv")
    assert (first["source_offset"], second["source_offset"]) == (1, 2)


def test_binance_aggtrades_header_and_microseconds_csv(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv"
    path.write_text(
        f"{AGG_HEADER}\n1,93000.1,0.01,1,1,{US_2025},false,true\n2,93000.2,0.02,2,3,{US_2025 + 5},true,true\n"
    )
    trades, dead = parse_file("binance-aggtrades", path)
    assert dead == []
    assert [micros(t["event_time"]) for t in trades] == [US_2025, US_2025 + 5]  # detected as microseconds
    assert [t["source_offset"] for t in trades] == [2, 3]  # line numbers count the header


def test_binance_mixed_units_are_each_detected(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv"
    path.write_text(f"1,1,1,1,1,{US_2025 // 1000},false,true\n2,1,1,2,2,{US_2025},false,true\n")
    trades, _ = parse_file("binance-aggtrades", path)
    assert [micros(t["event_time"]) for t in trades] == [US_2025 // 1000 * 1000, US_2025]


def test_binance_futures_aggtrades_have_seven_columns(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-03-01.csv"
    path.write_text(f"{AGG_HEADER.rsplit(',', 1)[0]}\n5,62000.5,0.003,9,9,{MS_2019},true\n")
    trades, dead = parse_file("binance-aggtrades", path, exchange="binance-usdm")
    assert dead == [] and trades[0]["exchange"] == "binance-usdm" and trades[0]["side"] == "sell"


def test_binance_trades_spot_layout_and_symbol_override(tmp_path):
    path = tmp_path / "trades.csv"
    path.write_text(f"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n100,0.5,10,5,{MS_2019},False,True\n")
    trades, dead = parse_file("binance-trades", path, symbol="DOGEUSDT")
    assert dead == []
    assert (trades[0]["symbol"], trades[0]["base"], trades[0]["quote"]) == ("DOGEUSDT", "DOGE", "USDT")
    assert trades[0]["trade_id"] == "100" and trades[0]["side"] == "buy"


def test_binance_malformed_lines_are_dead_letters_with_payload_and_line(tmp_path):
    lines = [
        f"1,0.5,1,1,1,{MS_2019},True,True",
        "2,0.5,1,1,1",  # truncated
        f"3,abc,1,1,1,{MS_2019},True,True",  # price not a number
        f"4,0.5,1,1,1,{MS_2019},maybe,True",  # bad boolean
        "",  # blank line: not a record
        f"x5,0.5,1,1,1,{MS_2019},True,True",  # bad id
        "6,0.5,1,1,1,1.5e12,True,True",  # time not an integer
        f"7,0.5,1,1,1,{MS_2019},True,True",
    ]
    path = tmp_path / "ETHBTC-aggTrades-2019-10-11.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"8,0.5,1,1,1,\xff\xfe,True,True\n")
    trades, dead = parse_file("binance-aggtrades", path)
    assert [t["trade_id"] for t in trades] == ["1", "7"]
    by_line = {d["source_offset"]: d for d in dead}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 9]
    assert by_line[2]["reason"] == "malformed" and by_line[2]["payload_string"] == "2,0.5,1,1,1"
    assert "price" in by_line[3]["error_message"]
    assert by_line[9]["reason"] == "bad_encoding" and by_line[9]["payload_bytes"].endswith(b"\xff\xfe,True,True")
    assert all(d["stage"] == "parse" and d["source"] == str(path) for d in dead)


def test_binance_wrong_header_is_reported(tmp_path):
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    path.write_text(f"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n1,1,1,1,{MS_2019},true,true\n")
    _, dead = parse_file("binance-aggtrades", path)
    assert dead[0]["reason"] == "unexpected_header"


def test_binance_without_symbol_anywhere_dead_letters(tmp_path):
    path = tmp_path / "trades.csv"
    path.write_text(f"1,0.5,1,1,1,{MS_2019},True,True\n")
    trades, dead = parse_file("binance-aggtrades", path)
    assert trades == [] and "symbol" in dead[0]["error_message"]


# ---------------------------------------------------------------------- Tardis
def test_tardis_trades_csv_gz(tmp_path):
    text = (
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
        f"binance,BTCUSDT,{US_2025},{US_2025 + 900},8000001,sell,93001.5,0.01\n"
        f"coinbase,BTC-USD,{US_2025 + 1},{US_2025 + 50},,buy,93002,0.2\n"
        f"coinbase,BTC-USD,not-a-time,{US_2025},1,buy,93002,0.2\n"
    )
    path = tmp_path / "trades_2025-01-01.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    trades, dead = parse_file("tardis-trades", path)
    binance, coinbase = trades
    assert (binance["exchange"], binance["symbol"], binance["side"]) == ("binance", "BTCUSDT", "sell")
    assert micros(binance["receive_time"]) == US_2025 + 900
    assert (coinbase["base"], coinbase["quote"]) == ("BTC", "USD")
    assert coinbase["trade_id"].startswith("trades_2025-01-01.csv.gz@") and coinbase["trade_id"].endswith(":3")
    assert [d["source_offset"] for d in dead] == [4]


# ---------------------------------------------------------------------- Coinbase
def test_coinbase_jsonl_maker_side_becomes_taker_side(tmp_path):
    lines = [
        {"time": "2024-03-01T12:00:00.123456Z", "trade_id": 74, "price": "61000.01", "size": "0.5", "side": "buy"},
        {
            "time": "2024-03-01T12:00:01Z",
            "trade_id": 75,
            "price": "61000.02",
            "size": "0.1",
            "side": "sell",
            "product_id": "ETH-USD",
        },
    ]
    path = tmp_path / "BTC-USD_2024-03-01.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n" + json.dumps({"trade_id": 1}) + "\n")
    trades, dead = parse_file("coinbase-trades", path)
    first, second = trades
    assert (first["symbol"], first["side"], first["amount"]) == ("BTC-USD", "sell", 0.5)  # maker bought -> taker sold
    assert (second["symbol"], second["side"]) == ("ETH-USD", "buy")
    assert micros(first["event_time"]) == 1709294400123456
    assert [d["source_offset"] for d in dead] == [3, 4] and "missing" in dead[1]["error_message"]


# ---------------------------------------------------------------------- Kraken
def test_kraken_csv_seconds_derived_ids_unknown_side(tmp_path):
    path = tmp_path / "XBTUSD.csv"
    path.write_text("1381095255,122.00000,0.10000000\n1381179030.5,123.61000,0.10000000\n1381179030,x,1\n")
    trades, dead = parse_file("kraken-trades", path)
    assert [(t["symbol"], t["base"], t["quote"], t["side"]) for t in trades] == [
        ("XBTUSD", "BTC", "USD", "unknown")
    ] * 2
    ids = [t["trade_id"] for t in trades]
    assert ids[0].startswith("XBTUSD.csv@") and [i.rsplit(":", 1)[1] for i in ids] == ["1", "2"]
    assert micros(trades[1]["event_time"]) == 1381179030_500000
    assert dead[0]["source_offset"] == 3


# ---------------------------------------------------------------------- normalized Parquet / Avro
def normalized_rows():
    return [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "base": "BTC",
            "quote": "USDT",
            "trade_id": "1",
            "price": 1.5,
            "amount": 2.0,
            "side": "buy",
            "event_time": US_2025,
            "receive_time": None,
        },
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "base": None,
            "quote": None,
            "trade_id": None,
            "price": 1.5,
            "amount": 2.0,
            "side": "sell",
            "event_time": US_2025,
            "receive_time": None,
        },
    ]


def test_normalized_parquet(tmp_path):
    path = tmp_path / "trades.parquet"
    table = pa.Table.from_pylist(normalized_rows())
    table = table.set_column(8, "event_time", table.column("event_time").cast(pa.timestamp("us", tz="UTC")))
    pq.write_table(table, path)
    trades, dead = parse_file("parquet", path)
    assert [t["trade_id"] for t in trades] == ["1"] and micros(trades[0]["event_time"]) == US_2025
    assert dead[0]["reason"] == "missing_field" and dead[0]["source_offset"] == 2


def test_normalized_avro_uses_the_published_schema(tmp_path):
    path = tmp_path / "trades.avro"
    with open(path, "wb") as handle:
        fastavro.writer(handle, parsed_avro_schema("trade"), [normalized_rows()[0]])
    trades, dead = parse_file("avro", path)
    assert dead == [] and trades[0]["symbol"] == "BTCUSDT" and micros(trades[0]["event_time"]) == US_2025


def test_parquet_missing_column_dead_letters_every_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"price": [1.0, 2.0]}), path)
    trades, dead = parse_file("parquet", path)
    assert trades == [] and len(dead) == 2 and "missing column" in dead[0]["error_message"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_is_documented(name):
    assert SOURCES[name].description


def test_normalized_bad_cells_cost_one_row_each_and_never_crash(tmp_path):
    path = tmp_path / "mixed.parquet"
    pq.write_table(
        pa.table(
            {
                "exchange": ["binance"] * 4,
                "symbol": ["BTCUSDT", None, "BTCUSDT", "BTCUSDT"],
                "trade_id": ["1", "2", "3", "4"],
                "price": ["1.5", "2.5", "abc", "3.5"],
                "amount": [1.0, 1.0, 1.0, 1.0],
                "side": ["buy"] * 4,
                "event_time": pa.array(
                    [US_2025 * 1000 + 7] * 4, pa.timestamp("ns", tz="UTC")
                ),  # sub-microsecond digits
                "receive_time": ["x", None, None, None],
            }
        ),
        path,
    )
    trades, dead = parse_file("parquet", path, symbol="FILLED")
    assert [t["trade_id"] for t in trades] == ["2", "4"]
    assert trades[0]["symbol"] == "FILLED"  # --symbol fills a missing value, never overwrites
    assert micros(trades[0]["event_time"]) == US_2025
    assert {d["source_offset"]: d["error_message"] for d in dead} == {
        1: "receive_time is not a timestamp",
        3: "price is not a number",
    }


@pytest.mark.parametrize(
    "line", ["+5,1.0,2.0,1,1,1570000000000,true,true", "5,1.0,2.0,1,1,-18445044073709551,true,true"]
)
def test_binance_signed_numbers_never_crash_or_wrap(tmp_path, line):
    path = tmp_path / "BTCUSDT-aggTrades-2019-10-11.csv"
    path.write_text(line + "\n")
    trades, dead = parse_file("binance-aggtrades", path)
    assert len(trades) + len(dead) == 1
    if trades:  # a leading + is a valid integer; a negative time stays negative (rejected later)
        assert micros(trades[0]["event_time"]) in (1570000000000000, -18445044073709551)


def test_coinbase_non_string_product_id_is_a_dead_letter(tmp_path):
    path = tmp_path / "BTC-USD.jsonl"
    path.write_text(
        json.dumps(
            {"time": "2024-03-01T12:00:00Z", "trade_id": 1, "price": "1", "size": "1", "side": "buy", "product_id": 123}
        )
        + "\n"
    )
    trades, dead = parse_file("coinbase-trades", path)
    assert trades == [] and dead[0]["reason"] == "malformed"


def test_utf8_bom_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{AGG_HEADER}\n1,1,1,1,1,{US_2025},false,true\n".encode())
    trades, dead = parse_file("binance-aggtrades", path)
    assert dead == [] and len(trades) == 1


def reference_lines(data: bytes) -> list[bytes]:
    """Physical lines as Python's own split gives them: LF or CRLF breaks, no final empty line."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"7,1.5", b"\n", b"\r", b"\r\n", b"\xff\xfe", b" ", b""]), max_size=40), st.integers(1, 6)
)
def test_line_batches_are_the_physical_lines_in_order(parts, batch_rows):
    data = b"".join(parts)
    lines, numbers = [], []
    for batch, first in line_batches(data, batch_rows):
        assert 1 <= len(batch) <= batch_rows
        numbers.extend(range(first, first + len(batch)))
        lines.extend(batch.to_pylist())
    assert lines == reference_lines(data)
    assert numbers == list(range(1, len(lines) + 1))


def test_a_line_that_is_not_utf8_costs_one_dead_letter_and_keeps_its_bytes(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2019-10-11.csv"
    good = f"1,1.5,2,1,1,{MS_2019},true,true\r\n".encode()
    path.write_bytes(good + b"2,1.5,\xff\xfe,1,1,1570752000565,true,true\r\n" + good.replace(b"1,", b"3,", 1))
    trades, dead = parse_file("binance-aggtrades", path)
    assert [t["trade_id"] for t in trades] == ["1", "3"]
    assert [(d["reason"], d["source_offset"], d["payload_bytes"]) for d in dead] == [
        ("bad_encoding", 2, b"2,1.5,\xff\xfe,1,1,1570752000565,true,true")
    ]


# Field values the line-by-line path accepts, rejects or reads in its own way; the fast path must
# agree with it on every batch, or leave the batch to it.
HOSTILE_INTEGERS = [
    "7",
    "+7",
    "007",
    "0000000000000000000007",
    "999999999999999999",
    "1000000000000000000",
    "-9223372036854775808",
    " 7",
    "7 ",
    "1e3",
    "7.0",
    "",
    "x",
]
HOSTILE_FLOATS = [
    "1.5",
    "+1.5",
    ".5",
    "5.",
    "1e3",
    "1E-3",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "nan(1)",
    "1e400",
    "1e-400",
    " 1.5",
    "1.5\t",
    "0x1p3",
    "1_0",
    "",
    "\u22121",
]
HOSTILE_BOOLS = ["true", "false", "True", "FALSE", "tRuE", "1", "0", " true", ""]


@st.composite
def aggtrades_lines(draw):
    """A batch of good lines with up to three changed: one hostile value makes the most telling case."""
    lines = [
        [str(i), "100.5", "0.25", "1", "1", str(MS_2019 + i), "true", "true"] for i in range(draw(st.integers(1, 8)))
    ]
    columns = {
        0: HOSTILE_INTEGERS,
        1: HOSTILE_FLOATS,
        2: HOSTILE_FLOATS,
        5: HOSTILE_INTEGERS,
        6: HOSTILE_BOOLS,
        3: [" 1", "x"],
    }
    for _ in range(draw(st.integers(0, 3))):
        line = draw(st.integers(0, len(lines) - 1))
        if draw(st.integers(0, 5)) == 0:
            lines[line] = draw(st.sampled_from([lines[line][:7], lines[line] + ["9"], lines[line][:3], []]))
        else:
            column = draw(st.sampled_from(sorted(columns)))
            if column < len(lines[line]):
                lines[line][column] = draw(st.sampled_from(columns[column]))
    lines = [",".join(fields).encode() for fields in lines]
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from([",".join(AGG_TRADES.names), "agg_trade_id,price", "\ufeff1,2"])).encode())
    return lines


@settings(max_examples=400, deadline=None)
@given(aggtrades_lines(), st.booleans())
@example([b"x,100.5,0.25,1,1,1570752000565,true,true"], True)  # a lone line read as a header
def test_the_fast_path_agrees_with_the_line_by_line_path(lines, starts_file):
    first = 1 if starts_file else 40
    raw = RawBatch(
        source="BTCUSDT-aggTrades-2019-10-11.csv",
        symbol_hint="BTCUSDT",
        payloads=lines,
        line_numbers=np.arange(first, first + len(lines)),
    )
    fast_trades, fast_dead = binance.parse_aggtrades(raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(binance, "read_clean_batch", lambda *args, **kwargs: None)
        slow_trades, slow_dead = binance.parse_aggtrades(raw)
    assert fast_trades.schema == slow_trades.schema
    for name in fast_trades.column_names:  # as plain values: times may lie past datetime's range, prices be NaN
        fast, slow = fast_trades.column(name), slow_trades.column(name)
        if pa.types.is_timestamp(fast.type):
            fast, slow = fast.cast(pa.int64()), slow.cast(pa.int64())
        assert repr(fast.to_pylist()) == repr(slow.to_pylist()), name  # repr: NaN equals NaN, floats exact
    assert [{**d, "dead_letter_time": 0} for d in fast_dead] == [{**d, "dead_letter_time": 0} for d in slow_dead]


def test_a_clean_batch_takes_the_fast_path_and_a_header_is_checked():
    lines = [",".join(AGG_TRADES.names).encode()] + [
        f"{i},1.5,2,{i},{i},{MS_2019 + i},false,true".encode() for i in range(1, 4)
    ]
    raw = RawBatch(source="x.csv", payloads=lines, line_numbers=np.arange(1, 5))
    clean = read_clean_batch(raw, AGG_TRADES.field_counts, AGG_TRADES.headers, {0: pa.int64(), 2: pa.float64()})
    assert clean is not None and clean.dead_letters == []
    assert clean.columns[0].tolist() == [1, 2, 3] and clean.columns[2].tolist() == [2.0, 2.0, 2.0]
    assert clean.line_numbers.tolist() == [2, 3, 4] and clean.payloads.to_pylist() == lines[1:]
    raw.payloads = pa.array([b"id,px"] + lines[1:], pa.binary())
    clean = read_clean_batch(raw, AGG_TRADES.field_counts, AGG_TRADES.headers, {0: pa.int64()})
    assert [d["reason"] for d in clean.dead_letters] == ["unexpected_header"]
    raw.payloads = pa.array(lines[:1], pa.binary())  # a header alone
    clean = read_clean_batch(raw, AGG_TRADES.field_counts, AGG_TRADES.headers, {0: pa.int64(), 6: pa.bool_()})
    assert clean.dead_letters == [] and len(clean.columns[0]) == 0 and clean.columns[6].dtype == bool
    raw.payloads = pa.array(lines[:2] + [b"4,1.5,2,4,4,1,false"], pa.binary())  # 7 fields after 8: not clean
    assert read_clean_batch(raw, AGG_TRADES.field_counts, AGG_TRADES.headers, {0: pa.int64()}) is None


def test_batches_stay_under_arrows_offset_limit(monkeypatch):
    import io_connectors.files as files

    monkeypatch.setattr(files, "MAX_BATCH_BYTES", 10)
    batches = [(batch.to_pylist(), first) for batch, first in line_batches(b"abc\ndefgh\nij\n", 5)]
    assert batches == [([b"abc"], 1), ([b"defgh", b"ij"], 2)]
    with pytest.raises(ValueError, match="a line of 16 bytes"):  # the file's reader dead-letters it
        list(line_batches(b"abcdefghijklmnop\nxy\n", 5))
