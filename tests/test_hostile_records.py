"""Single hostile records (issue 21): each costs one dead letter, never the run, and no bar ever
holds a value that is not finite."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import read_raw_batches
from tests.support.helpers import T0
from tests.support.paths import CLI
from transforms.trade_batch import make_trade_batch
from transforms.validate_records import LARGEST_VALUE, SMALLEST_VALUE, invalid_reasons

MS = T0 // 1000
MINUTE_MS = 60_000
BAR_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume")


def cryptobeam(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


def backfill(source: str, inputs: list[Path], out: Path):
    """Run a backfill; return (summary, bars, dead letters), after checking it ended well."""
    args = ["backfill", "--source", source, "--out", str(out), "--no-progress"]
    for path in inputs:
        args += ["--input", str(path)]
    result = cryptobeam(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and summary["problems"] == [], summary
    bars = pq.read_table(out / "bars").to_pylist()
    dead = pq.read_table(out / "dead_letter").to_pylist() if (out / "dead_letter").exists() else []
    in_bars = sum(b["trade_count"] for b in bars if not b["is_filled"])
    assert summary["records_in"] == in_bars + len(dead) + summary.get("duplicates", 0)
    for bar in bars:
        assert all(bar[name] is None or math.isfinite(bar[name]) for name in BAR_VALUES), bar
        assert bar["vwap"] is None or bar["low"] <= bar["vwap"] <= bar["high"], bar
    return summary, bars, dead


def reasons_by_line(dead: list[dict]) -> dict[int, str]:
    return {d["source_offset"]: d["reason"] for d in dead}


# ---------------------------------------------------------------------- sums that would overflow (item 10)


def one_trade(price: float, amount: float) -> pa.Table:
    return make_trade_batch(
        exchange=["binance"],
        symbol=["BTCUSDT"],
        trade_id=["1"],
        price=[price],
        amount=[amount],
        side=["buy"],
        event_time=[T0],
        source="test",
    )


@pytest.mark.parametrize(
    "price, amount, reason",
    [
        (LARGEST_VALUE, 1.0, ""),
        (SMALLEST_VALUE, 1.0, ""),
        (1e200, 1e80, ""),
        (1.7e308, 1.0, "price_out_of_range"),
        (LARGEST_VALUE * 1.0000001, 1.0, "price_out_of_range"),
        (1e-320, 1.0, "price_out_of_range"),  # subnormal
        (1.0, 5e-324, "amount_out_of_range"),
        (1.0, 1e300, "amount_out_of_range"),
        (1e154, 1e154, "notional_overflow"),
        (1e200, 1e81, "notional_overflow"),
        (1e-200, 1e-200, "notional_underflow"),  # the product underflows to 0
        (1e-160, 1e-150, "notional_underflow"),  # the product is subnormal
    ],
)
def test_values_out_of_the_summable_range_are_rejected(price, amount, reason):
    assert invalid_reasons(one_trade(price, amount), 0, 2**62).tolist() == [reason]


def test_the_bound_keeps_any_window_finite():
    """2**63 trades (more than a trade count can hold) at the largest value still sum finitely."""
    assert math.isfinite(LARGEST_VALUE * 2.0**63)


@pytest.mark.pipeline
def test_trades_that_would_overflow_a_bar_are_dead_letters_and_the_backfill_reconciles(tmp_path):
    lines = [f"{i},{1.7e308!r},1,{i},{i},{MS + i},true,true" for i in range(1, 6)]  # minute 0: five at 1.7e308
    lines += ["6,1.5,2,6,6,%d,false,true" % (MS + 10)]
    lines += [f"7,1e154,1e154,7,7,{MS + MINUTE_MS},true,true", f"8,2.5,1,8,8,{MS + MINUTE_MS + 1},true,true"]
    lines += [f"9,1e-320,1,9,9,{MS + 2 * MINUTE_MS},true,true", f"10,3.5,1,10,10,{MS + 2 * MINUTE_MS + 1},true,true"]
    lines += [f"{i},1e280,1,{i},{i},{MS + 3 * MINUTE_MS + i},false,true" for i in range(11, 16)]  # at the bound
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary, bars, dead = backfill("binance-aggtrades", [path], out)
    assert reasons_by_line(dead) == {
        1: "price_out_of_range",
        2: "price_out_of_range",
        3: "price_out_of_range",
        4: "price_out_of_range",
        5: "price_out_of_range",
        7: "notional_overflow",
        9: "price_out_of_range",
    }
    by_minute = {int(b["window_start"].timestamp() * 1000 - MS) // MINUTE_MS: b for b in bars}
    assert [(m, by_minute[m]["trade_count"], by_minute[m]["vwap"]) for m in sorted(by_minute)] == [
        (0, 1, 1.5),
        (1, 1, 2.5),
        (2, 1, 3.5),
        (3, 5, 1e280),
    ]
    assert by_minute[3]["quote_volume"] == 5e280


def test_the_rule_is_per_trade_so_any_batching_gives_the_same_bars_and_dead_letters():
    """The stream cuts trades into other batches than the backfill: the verdicts must not move."""
    from tests.support.helpers import raw_batch, run_trades_to_bars
    from transforms.bar_spec import BarSpec

    values = [(1.7e308, 1.0), (1e280, 1.0), (1e154, 1e154), (1e-320, 1.0), (2.5, 4.0), (1e280, 1.0), (1e-160, 1e-150)]
    rows = [
        {"symbol": "BTCUSDT", "trade_id": i, "price": p, "amount": a, "event_time": T0 + i}
        for i, (p, a) in enumerate(values * 3)
    ]
    outcomes = []
    for cuts in ([], [5, 9, 16]):
        batches = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)])]
        bars, dead, _ = run_trades_to_bars(
            [raw_batch(part, first_row=1 + sum(map(len, batches[:k]))) for k, part in enumerate(batches)],
            BarSpec.of("1m"),
        )
        outcomes.append(
            (
                sorted((d["source_offset"], d["reason"]) for d in dead),
                [{k: bar[k] for k in BAR_VALUES + ("trade_count",)} for bar in bars],
            )
        )
    assert outcomes[0] == outcomes[1]
    [bar] = outcomes[0][1]
    assert bar["trade_count"] == 9 and bar["quote_volume"] == 6 * 1e280 + 3 * 10.0
    assert all(math.isfinite(bar[k]) for k in BAR_VALUES)


# ---------------------------------------------------------------------- records that crashed a parser (item 11)


@pytest.mark.pipeline
def test_a_deeply_nested_or_unencodable_json_line_is_one_dead_letter(tmp_path):
    good = {"trade_id": 1, "price": "1.5", "size": "2", "side": "buy", "time": "2024-01-01T00:00:01Z"}
    lines = [
        json.dumps(good).encode(),
        b"[" * 100_000,
        json.dumps({**good, "trade_id": "\ud800"}).encode(),  # a lone surrogate: no UTF-8 holds it
        json.dumps({**good, "trade_id": 2, "product_id": "BTC-\udcff"}).encode(),
        b"\xff" + json.dumps({**good, "trade_id": 3}).encode(),
        json.dumps({**good, "trade_id": 4}).encode(),
    ]
    path = tmp_path / "BTC-USD_2024-01-01.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary, bars, dead = backfill("coinbase-trades", [path], tmp_path / "out")
    assert reasons_by_line(dead) == {2: "malformed", 3: "malformed", 4: "malformed", 5: "bad_encoding"}
    assert [d["payload_bytes"] for d in sorted(dead, key=lambda d: d["source_offset"])] == lines[1:5]
    assert summary["records_in"] == 6 and sum(b["trade_count"] for b in bars) == 2


def trades_columns(n: int = 3) -> dict:
    return {
        "exchange": ["binance"] * n,
        "symbol": ["XRPETH"] * n,
        "trade_id": [str(i) for i in range(1, n + 1)],
        "price": [1.0 + i for i in range(n)],
        "amount": [1.0] * n,
        "side": ["buy", "sell", "buy"][:n],
        "event_time": pa.array([T0 + i for i in range(n)], pa.int64()),
    }


def hostile_tables() -> dict[str, tuple[pa.Table, dict[int, str]]]:
    """Parquet tables that crashed the parser, and the reason each bad row gets."""
    columns = trades_columns()
    huge_times = pa.table({**columns, "event_time": pa.array([T0, 2**63, 2**64 - 1], pa.uint64())})
    list_quote = pa.table({**columns, "quote": pa.array([None, ["ETH"], []], pa.list_(pa.string()))})
    repeated = pa.table(columns).append_column("price", pa.array([5.0, 6.0, 7.0]))
    not_utf8 = pa.table(
        {
            **columns,
            "symbol": pa.array([b"XRPETH", b"XRP\xffETH", b"XRPETH"], pa.binary()),
            "side": pa.array([b"buy", b"sell", b"\xe9"], pa.binary()),
            "trade_id": pa.array([b"1", b"2", b"3"], pa.binary()),
        }
    )
    return {
        "huge_times": (huge_times, {2: "malformed", 3: "malformed"}),
        "list_quote": (list_quote, {2: "malformed", 3: "malformed"}),
        "repeated_column": (repeated, {1: "malformed", 2: "malformed", 3: "malformed"}),
        "not_utf8": (not_utf8, {2: "bad_encoding", 3: "bad_encoding"}),
    }


def parse_parquet(path: Path):
    source = SOURCES["parquet"]
    trades, dead = [], []
    for raw in read_raw_batches(source, str(path)):
        table, letters = parser_for(source)(raw)
        trades += table.to_pylist()
        dead += letters
    return trades, dead


@pytest.mark.parametrize("name", sorted(hostile_tables()))
def test_a_hostile_parquet_column_costs_only_its_bad_rows(tmp_path, name):
    table, reasons = hostile_tables()[name]
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    trades, dead = parse_parquet(path)
    assert reasons_by_line(dead) == reasons
    assert len(trades) + len(dead) == table.num_rows
    for trade in trades:  # text decoded, never the repr of bytes
        assert (trade["symbol"], trade["exchange"]) == ("XRPETH", "binance")
        assert trade["side"] in ("buy", "sell") and trade["trade_id"].isdigit()
    for letter in dead:
        assert json.loads(letter["payload_string"])["trade_id"] in ("1", "2", "3")


def test_the_repeated_column_is_named_and_both_copies_kept_in_the_payload(tmp_path):
    table, _ = hostile_tables()["repeated_column"]
    pq.write_table(table, tmp_path / "t.parquet")
    _, dead = parse_parquet(tmp_path / "t.parquet")
    assert dead[0]["error_message"] == "column price appears 2 times"
    assert dead[0]["payload_string"].count('"price": ') == 2


@pytest.mark.pipeline
def test_hostile_parquet_files_backfill_and_reconcile(tmp_path):
    expected = {}
    for name, (table, reasons) in hostile_tables().items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        expected.update({(str(tmp_path / f"{name}.parquet"), line): reason for line, reason in reasons.items()})
    summary, bars, dead = backfill("parquet", [tmp_path / "*.parquet"], tmp_path / "out")
    assert {(d["source"], d["source_offset"]): d["reason"] for d in dead} == expected
    assert {b["symbol"] for b in bars} == {"XRPETH"}
    assert summary["records_in"] == 12


# ---------------------------------------------------------------------- replay keeps going (item 11)


def test_replay_rejects_bad_records_and_unreadable_files_and_publishes_the_rest(kafka_bootstrap, tmp_path):
    good_csv = "".join(f"{i},1.0,1.0,{i},{i},{MS + i},true,true\n" for i in range(1, 4))
    with zipfile.ZipFile(tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip", "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2024-01-01.csv", good_csv)
    (tmp_path / "BTCUSDT-aggTrades-2024-01-02.zip").write_bytes(b"PK\x03\x04 not a zip")
    coinbase = tmp_path / "BTC-USD_2024-01-01.jsonl"
    coinbase.write_bytes(
        b"[" * 100_000
        + b"\n"
        + json.dumps(
            {"trade_id": 1, "price": "1.5", "size": "2", "side": "buy", "time": "2024-01-01T00:00:01Z"}
        ).encode()
        + b"\n"
    )
    table, _ = hostile_tables()["huge_times"]
    pq.write_table(table, tmp_path / "huge_times.parquet")
    for source, pattern, published, rejected in [
        ("binance-aggtrades", "*.zip", 3, 1),
        ("coinbase-trades", "*.jsonl", 1, 1),
        ("parquet", "*.parquet", 1, 2),
    ]:
        result = cryptobeam(
            "replay",
            "--source",
            source,
            "--input",
            str(tmp_path / pattern),
            "--kafka",
            kafka_bootstrap,
            "--topic",
            f"hostile_{source}",
            "--no-progress",
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
        figures = {
            line.split("│")[1].strip(): int(line.split("│")[2].replace(",", ""))
            for line in result.stdout.splitlines()
            if line.count("│") == 3 and line.split("│")[2].strip().replace(",", "").isdigit()
        }
        assert figures["published"] == published and figures["rejected by the parser (not published)"] == rejected
        assert figures["read"] == published + rejected


def test_an_unreadable_file_is_one_rejected_record_for_replay(tmp_path):
    from io_connectors.replay import load_trades

    bad = tmp_path / "BTCUSDT-aggTrades-2024-01-02.zip"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    good = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    good.write_text(f"1,1.0,1.0,1,1,{MS},true,true\n")
    source = SOURCES["binance-aggtrades"]
    unreadable = []
    trades, read, rejected = load_trades(source, parser_for(source), [str(bad), str(good)], unreadable)
    assert (trades.num_rows, read, rejected) == (1, 2, 1)
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{bad}: BadZipFile")
    assert np.array_equal(trades.column("trade_id").to_numpy(zero_copy_only=False), ["1"])


def test_replay_counts_what_the_reader_could_not_pass_on(tmp_path):
    """A line past the reader's limit and the unreadable rest of a damaged gzip are one rejected
    record each, as in a backfill; the lines around them are published."""
    from io_connectors.replay import load_trades

    lines = [f"binance,BTCUSDT,{T0 + i},{T0 + i},{i},buy,1.0,1.0" for i in range(3)]
    long_line = tmp_path / "binance_trades_2024-01-01.csv"
    header = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
    long_line.write_text("\n".join([header, lines[0], "x" * (3 * 2**20), *lines[1:]]) + "\n")
    body = gzip.compress("\n".join(lines * 1000).encode())
    damaged = tmp_path / "binance_trades_2024-01-02.csv.gz"
    damaged.write_bytes(body[: len(body) // 2])
    source = SOURCES["tardis-trades"]
    trades, read, rejected = load_trades(source, parser_for(source), [str(long_line), str(damaged)])
    assert (trades.num_rows, rejected, read) == (3, 2, 5)
