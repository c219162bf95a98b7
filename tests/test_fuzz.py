"""Hostile input at scale: every format, thousands of generated lines, no crash, exact accounting.

Each example writes a file mixing valid lines with truncated lines, wrong types, NaN/Inf, huge
and negative numbers, dates in 1970 and 2200, stray and non-UTF-8 bytes and very long lines, and
runs the whole pipeline over it. Every non-blank line must end up in a bar, as a duplicate, or
as a dead letter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import read_raw_batches
from tests.helpers import run_trades_to_bars
from transforms import BarSpec

EXAMPLES = int(os.environ.get("CRYPTOBEAM_FUZZ_EXAMPLES", "40"))
LINES_RUN = {"lines": 0, "examples": 0}  # reported in the test session summary (conftest.py)

MS = 1_704_067_200_000  # 2024-01-01 in ms
hostile_token = st.sampled_from([
    "", "NaN", "nan", "inf", "-inf", "-1", "0", "-0.0", "1e400", "9" * 40, "abc", "\x00", "1.2.3", "0x1F",
    "True", "maybe", "1970-01-01T00:00:00Z", "2200-01-01T00:00:00Z", "0", str(7_258_118_400_000), "x" * 5000,
    "\u202e", "'; DROP TABLE", "../../x", "\ufeff", "1,5", '"', "{", "[]",
])
number = st.one_of(st.integers(1, 10**6).map(str), st.floats(1e-6, 1e6).map(lambda f: f"{f:.8f}"))
epoch_ms = st.integers(MS, MS + 3_600_000)


def mutate(fields: list[str], data) -> str:
    """Replace, drop or add fields, or cut the line short."""
    choice = data.draw(st.integers(0, 4))
    if choice == 0:
        return ",".join(fields)
    if choice == 1:
        i = data.draw(st.integers(0, len(fields) - 1))
        fields = fields[:i] + [data.draw(hostile_token)] + fields[i + 1:]
    elif choice == 2:
        fields = fields[: data.draw(st.integers(0, len(fields) - 1))]
    elif choice == 3:
        fields = fields + [data.draw(hostile_token)]
    line = ",".join(fields)
    if choice == 4:
        line = line[: data.draw(st.integers(0, len(line)))]
    return line


def binance_agg_line(data):
    i = data.draw(st.integers(1, 60))  # small id range: plenty of duplicates
    return mutate([str(i), data.draw(number), data.draw(number), str(i), str(i), str(data.draw(epoch_ms)),
                   data.draw(st.sampled_from(["True", "False"])), "True"], data)


def binance_trade_line(data):
    i = data.draw(st.integers(1, 60))
    return mutate([str(i), data.draw(number), data.draw(number), data.draw(number), str(data.draw(epoch_ms) * 1000),
                   data.draw(st.sampled_from(["true", "false"]))], data)


def tardis_line(data):
    t = data.draw(epoch_ms) * 1000
    return mutate(["binance", data.draw(st.sampled_from(["BTCUSDT", "../../x", "a/b", ".."])), str(t), str(t + 5),
                   str(data.draw(st.integers(1, 60))), data.draw(st.sampled_from(["buy", "sell", "unknown", "long"])),
                   data.draw(number), data.draw(number)], data)


def kraken_line(data):
    return mutate([str(data.draw(epoch_ms) / 1000), data.draw(number), data.draw(number)], data)


def coinbase_line(data):
    record = {"trade_id": data.draw(st.integers(1, 60)), "price": data.draw(number), "size": data.draw(number),
              "side": data.draw(st.sampled_from(["buy", "sell", "up"])),
              "time": data.draw(st.sampled_from(["2024-01-01T00:00:01.5Z", "2024-01-01T00:30:00Z", "1970-01-01T00:00:00Z",
                                                 "2200-01-01T00:00:00Z", "yesterday"]))}
    if data.draw(st.booleans()):
        record[data.draw(st.sampled_from(list(record)))] = data.draw(st.one_of(hostile_token, st.integers(), st.none()))
    text = json.dumps(record)
    return text[: data.draw(st.integers(0, len(text)))] if data.draw(st.integers(0, 4)) == 0 else text


FORMATS = {
    "binance-aggtrades": ("BTCUSDT-aggTrades-2024-01-01.csv", binance_agg_line, None),
    "binance-trades": ("BTCUSDT-trades-2024-01-01.csv", binance_trade_line, None),
    "tardis-trades": ("binance_trades_2024-01-01.csv", tardis_line,
                      "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"),
    "kraken-trades": ("XBTUSD.csv", kraken_line, None),
    "coinbase-trades": ("BTC-USD_2024-01-01.jsonl", coinbase_line, None),
}


def hostile_bytes(line: str, data) -> bytes:
    raw = line.encode("utf-8", "surrogatepass")
    if data.draw(st.integers(0, 9)) == 0:
        raw = raw[:1] + b"\xe9\xff" + raw[1:]  # not UTF-8
    return raw


def run_file(source_name: str, path: Path):
    source = SOURCES[source_name]
    raws = list(read_raw_batches(source, str(path), batch_rows=37))
    return run_trades_to_bars(raws, BarSpec.of("1m", fill_gaps=True), parser_for(source))


def check(source_name, path, lines):
    bars, dead, counters = run_file(source_name, path)
    records = sum(1 for line in lines if line.strip())
    assert counters.get("records_in", 0) == records
    in_bars = sum(b["trade_count"] for b in bars if not b["is_filled"])
    assert records == in_bars + len(dead) + counters.get("duplicates", 0)
    assert all(d["reason"] and d["source"] == str(path) and d["source_offset"] for d in dead)
    LINES_RUN["lines"] += len(lines)
    LINES_RUN["examples"] += 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), name=st.sampled_from(sorted(FORMATS)))
def test_text_formats_never_crash_and_always_reconcile(tmp_path_factory, data, name):
    file_name, make_line, header = FORMATS[name]
    lines = [hostile_bytes(make_line(data), data) for _ in range(data.draw(st.integers(20, 150)))]
    if data.draw(st.booleans()):
        lines.insert(data.draw(st.integers(0, len(lines))), b"")  # blank lines are not records
    path = tmp_path_factory.mktemp(name) / file_name
    body = ([header.encode()] if header else []) + lines
    path.write_bytes(b"\n".join(body) + b"\n")
    check(name, path, lines)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["BTCUSDT", "../../x"])), st.integers(1, 40),
                          st.one_of(hostile_token, number), st.one_of(hostile_token, number),
                          st.one_of(st.none(), epoch_ms.map(lambda ms: ms * 1000), st.just(-5),
                                    st.just(2**62), st.just(-2**62))),  # past what a datetime holds
                min_size=1, max_size=120))
def test_parquet_never_crashes_and_always_reconciles(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("pq") / "trades.parquet"
    pq.write_table(pa.table({
        "exchange": ["binance"] * len(rows), "symbol": [r[0] for r in rows], "trade_id": [str(r[1]) for r in rows],
        "price": [r[2] for r in rows], "amount": [r[3] for r in rows], "side": ["buy"] * len(rows),
        "event_time": pa.array([r[4] for r in rows], pa.int64())}), path)
    bars, dead, counters = run_file("parquet", path)
    assert counters["records_in"] == len(rows)
    assert len(rows) == sum(b["trade_count"] for b in bars if not b["is_filled"]) + len(dead) + counters.get("duplicates", 0)
    LINES_RUN["lines"] += len(rows)
    LINES_RUN["examples"] += 1


def test_hostile_symbols_never_leave_the_output_directory(tmp_path):
    path = tmp_path / "trades.csv"
    symbols = ["../../escape", "..", "a/b", "/etc/passwd", "%2e%2e", "ok"]
    lines = [f"binance,{s},{1704067200000000 + i},{1704067200000000 + i},{i},buy,1.0,1.0" for i, s in enumerate(symbols)]
    path.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    cli = str(Path(sys.executable).parent / "cryptobeam")
    result = subprocess.run([cli, "backfill", "--source", "tardis-trades", "--input", str(path), "--out", str(out),
                             "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    root = out.resolve()
    written = [p.resolve() for p in tmp_path.rglob("*") if p.is_file() and p != path]
    assert written and all(root in p.parents for p in written)
    assert sorted(pq.read_table(out / "bars").column("symbol").to_pylist()) == sorted(symbols)
