"""Hostile input files: a zip bomb, a line with no end, old-Mac line breaks, hidden zip members,
damaged gzip and Avro files, union-typed Avro fields. Each is read in bounded memory, and every
record it holds is in a bar or a dead letter: nothing vanishes, and the counts reconcile."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.outputs import bars_of, summary
from tests.support.paths import CLI

MS_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms
MIB = 2**20


def aggtrade_lines(n: int, first_id: int = 1) -> list[bytes]:
    return [
        f"{i},{42000 + i % 97 / 100:.2f},0.{i % 9 + 1},{i},{i},{MS_2024 + i * 997},True,True".encode()
        for i in range(first_id, first_id + n)
    ]


def backfill(inputs: Path, out: Path, source: str = "binance-aggtrades", *extra, wrapper=()):
    return subprocess.run(
        [
            *wrapper,
            CLI,
            "backfill",
            "--source",
            source,
            "--input",
            str(inputs),
            "--interval",
            "1m",
            "--out",
            str(out),
            "--no-progress",
            "--workers",
            "1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def dead_letters(out: Path) -> list[dict]:
    if not (out / "dead_letter").exists():
        return []
    return sorted(pq.read_table(out / "dead_letter").to_pylist(), key=lambda d: (d["source"], d["source_offset"] or 0))


def assert_reconciled(out: Path, records: int) -> dict:
    """Every record read is in a bar, a dead letter or counted as a duplicate."""
    run = summary(out)
    assert run["reconciled"] and run["problems"] == [], run["problems"]
    assert run["records_in"] == records
    in_bars = sum(b["trade_count"] for b in bars_of(out) if not b["is_filled"]) if (out / "bars").exists() else 0
    assert records == in_bars + len(dead_letters(out)) + run["duplicates"]
    return run


# A child that runs the command and prints the peak resident memory of it and everything it waited for.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)"
)


@pytest.mark.pipeline
def test_a_zip_bomb_is_one_dead_letter_read_in_bounded_memory(tmp_path):
    # 32 MiB of NUL bytes, no line break: one line of 32 MiB in a 32 KB zip.
    bomb = tmp_path / "bomb" / "BTCUSDT-aggTrades-2024-01-01.zip"
    bomb.parent.mkdir()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("BTCUSDT-aggTrades-2024-01-01.csv", "w") as member:
            for _ in range(32):
                member.write(b"\0" * MIB)
    small = tmp_path / "small" / "BTCUSDT-aggTrades-2024-01-01.csv"
    small.parent.mkdir()
    small.write_bytes(b"\n".join(aggtrade_lines(100)) + b"\n")
    peaks = {}
    for name, path in (("small", small), ("bomb", bomb)):
        result = backfill(path, tmp_path / f"out-{name}", wrapper=(sys.executable, "-c", PEAK_RSS))
        assert result.returncode == 0, result.stdout + result.stderr
        peaks[name] = int(result.stdout.strip().splitlines()[-1])
    # Memory beyond what a 100-line run takes: a read block or two, never the member, let alone its copies.
    assert peaks["bomb"] - peaks["small"] < 160 * MIB, peaks
    assert_reconciled(tmp_path / "out-bomb", 1)
    [letter] = dead_letters(tmp_path / "out-bomb")
    assert (letter["reason"], letter["stage"], letter["source_offset"]) == ("malformed", "read", 1)
    assert letter["source"] == f"{bomb}!BTCUSDT-aggTrades-2024-01-01.csv"
    assert letter["payload_bytes"] == b"\0" * 1024 and f"{32 * MIB:,} bytes" in letter["error_message"]


@pytest.mark.pipeline
def test_an_over_long_line_is_one_malformed_dead_letter_and_the_lines_around_it_are_read(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    long_line = b"1,2," + b"9" * (2 * MIB)
    endless = b"x" * (MIB + 10)  # the last line, with no line break
    path.write_bytes(b"\n".join(aggtrade_lines(50) + [long_line] + aggtrade_lines(50, 51) + [endless]))
    out = tmp_path / "out"
    result = backfill(path, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_reconciled(out, 102)
    assert sum(b["trade_count"] for b in bars_of(out) if not b["is_filled"]) == 100
    letters = dead_letters(out)
    assert [(d["reason"], d["stage"], d["source_offset"]) for d in letters] == [
        ("malformed", "read", 51),
        ("malformed", "read", 102),
    ]
    assert [d["payload_bytes"] for d in letters] == [long_line[:1024], endless[:1024]]
    assert f"{len(long_line):,} bytes" in letters[0]["error_message"]


@pytest.mark.pipeline
def test_old_mac_line_breaks_split_lines_like_line_feeds(tmp_path):
    lines = aggtrade_lines(300)
    (tmp_path / "lf").mkdir()
    (tmp_path / "cr").mkdir()
    (tmp_path / "lf" / "BTCUSDT-aggTrades-2024-01-01.csv").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "cr" / "BTCUSDT-aggTrades-2024-01-01.csv").write_bytes(b"\r".join(lines) + b"\r")
    for name in ("lf", "cr"):
        result = backfill(tmp_path / name / "*.csv", tmp_path / f"out-{name}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert_reconciled(tmp_path / f"out-{name}", 300)
    assert dead_letters(tmp_path / "out-cr") == []
    assert bars_of(tmp_path / "out-cr") == bars_of(tmp_path / "out-lf")


@pytest.mark.pipeline
def test_hidden_zip_members_are_read(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2024-01-01.csv", b"\n".join(aggtrade_lines(40)) + b"\n")
        archive.writestr(".BTCUSDT-aggTrades-2024-01-01-late.csv", b"\n".join(aggtrade_lines(25, 41)) + b"\n")
        archive.writestr("__MACOSX/._BTCUSDT-aggTrades-2024-01-01.csv", b"\x00\x05\x16\x07junk")
    out = tmp_path / "out"
    result = backfill(path, out, "binance-aggtrades", "--symbol", "BTCUSDT")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_reconciled(out, 40 + 25 + 1)
    assert sum(b["trade_count"] for b in bars_of(out) if not b["is_filled"]) == 65
    [junk] = dead_letters(out)
    assert junk["source"] == f"{path}!__MACOSX/._BTCUSDT-aggTrades-2024-01-01.csv"


@pytest.mark.pipeline
def test_a_zip_member_that_cannot_be_opened_costs_only_that_member(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.csv", b"\n".join(aggtrade_lines(30)) + b"\n")
        archive.writestr("b.csv", b"\n".join(aggtrade_lines(20, 31)) + b"\n")
        archive.writestr("c.csv", b"\n".join(aggtrade_lines(10, 51)) + b"\n")
    data = bytearray(path.read_bytes())
    central_b = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)  # b.csv's central directory entry
    data[central_b + 10 : central_b + 12] = (99).to_bytes(2, "little")  # a compression method zipfile cannot read
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = backfill(path, out, "binance-aggtrades", "--symbol", "BTCUSDT")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_reconciled(out, 30 + 10 + 1)
    [lost] = dead_letters(out)
    assert lost["reason"] == "unreadable_file" and lost["source"] == f"{path}!b.csv"


def test_a_truncated_gzip_body_passes_on_the_lines_before_the_damage():
    from io_connectors.files import DamagedStream, text_batches

    lines = aggtrade_lines(3000)
    body = gzip.compress(b"\n".join(lines) + b"\n")
    stream = gzip.GzipFile(fileobj=io.BytesIO(body[: len(body) * 2 // 3]))
    read, numbers = [], []
    try:
        for batch, batch_numbers, long_lines in text_batches(stream, 500, block_bytes=4096):
            read += batch.to_pylist()
            numbers += batch_numbers.tolist()
            assert long_lines == []
        raise AssertionError("the damage went unnoticed")
    except DamagedStream as damage:
        assert damage.next_line == len(read) + 1 and "EOFError" in str(damage)
    assert 1000 < len(read) < 3000  # all but the block in which the body ends
    assert read == lines[: len(read)] and numbers == list(range(1, len(read) + 1))


def test_a_damaged_gzip_keeps_all_but_its_last_piece_at_the_default_block_size():
    """A read that meets the damage gives nothing, so blocks are read in pieces: of a 64 MiB block,
    only the last piece before the damage is lost, not the whole block."""
    from io_connectors.files import READ_PIECE_BYTES, DamagedStream, text_batches

    lines = aggtrade_lines(200_000)  # about 12 MB of text, under one default block
    body = gzip.compress(b"\n".join(lines) + b"\n")
    stream = gzip.GzipFile(fileobj=io.BytesIO(body[: len(body) * 2 // 3]))
    read = []
    try:
        for batch, _numbers, _long_lines in text_batches(stream, 50_000):
            read += batch.to_pylist()
        raise AssertionError("the damage went unnoticed")
    except DamagedStream as damage:
        assert damage.next_line == len(read) + 1
    kept_bytes = sum(len(line) + 1 for line in read)
    assert read == lines[: len(read)]
    assert kept_bytes > len(b"\n".join(lines)) * 2 // 3 - 2 * READ_PIECE_BYTES - 50_000 * 70


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"7,1.5", b"\n", b"\r\n", b"\xff", b" ", b"x" * 9, b"\r"]), max_size=40),
    st.integers(1, 5),
    st.integers(1, 40),
    st.sampled_from([4, 12, 10**6]),
)
def test_streamed_lines_are_the_physical_lines_and_long_ones_are_reported(parts, batch_rows, block_bytes, limit):
    from io_connectors.files import text_batches

    data = b"".join(parts)
    old_mac = b"\n" not in data[:block_bytes] and b"\r" in data[:block_bytes]  # read with CR line breaks
    expected = (data.replace(b"\r", b"\n") if old_mac else data).split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    expected = [(n, line[:-1] if line.endswith(b"\r") else line) for n, line in enumerate(expected, 1)]
    lines, long = [], []
    for batch, numbers, long_lines in text_batches(io.BytesIO(data), batch_rows, limit, block_bytes):
        assert len(batch) == len(numbers) <= batch_rows
        lines += zip(numbers.tolist(), batch.to_pylist())
        long += [(line.number, line.length, line.head) for line in long_lines]
    assert lines == [(n, line) for n, line in expected if len(line) <= limit]
    assert long == [(n, len(line), line[:1024]) for n, line in expected if len(line) > limit]


TRADE_SCHEMA = {
    "type": "record",
    "name": "Trade",
    "fields": [
        {"name": "exchange", "type": "string"},
        {"name": "symbol", "type": "string"},
        {"name": "trade_id", "type": "string"},
        {"name": "price", "type": ["null", "string", "double"]},
        {"name": "amount", "type": "double"},
        {"name": "side", "type": "string"},
        {"name": "event_time", "type": "long"},
    ],
}


def avro_trades(n: int) -> list[dict]:
    """Trades whose union-typed price is a double for odd ids and a numeric string for even ones."""
    return [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "trade_id": str(i),
            "price": 100.5 + i if i % 2 else f"{100 + i}",
            "amount": 0.25,
            "side": "buy",
            "event_time": MS_2024 * 1000 + i * 1_000_000,
        }
        for i in range(1, n + 1)
    ]


@pytest.mark.pipeline
def test_a_union_typed_avro_field_is_read_record_by_record(tmp_path):
    records = avro_trades(120)
    records[40]["price"] = "not a price"
    path = tmp_path / "trades.avro"
    with path.open("wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(TRADE_SCHEMA), records)
    out = tmp_path / "out"
    result = backfill(path, out, "avro")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_reconciled(out, 120)
    assert sum(b["trade_count"] for b in bars_of(out) if not b["is_filled"]) == 119
    [letter] = dead_letters(out)
    assert (letter["reason"], letter["source_offset"]) == ("malformed", 41)
    assert json.loads(letter["payload_string"])["price"] == "not a price"
    prices = [float(r["price"]) for r in records if r["price"] != "not a price"]
    assert sum(b["quote_volume"] for b in bars_of(out)) == pytest.approx(sum(prices) * 0.25)
    assert max(b["high"] for b in bars_of(out)) == max(prices)


@pytest.mark.pipeline
def test_a_truncated_avro_file_keeps_the_records_before_the_damage(tmp_path):
    records = avro_trades(300)
    buffer = io.BytesIO()
    writer = fastavro.write.Writer(buffer, fastavro.parse_schema(TRADE_SCHEMA), codec="deflate")
    for record in records[:200]:
        writer.write(record)
    writer.flush()  # the first 200 records end a block here
    whole_blocks = buffer.tell()
    for record in records[200:]:
        writer.write(record)
    writer.flush()
    path = tmp_path / "trades.avro"
    path.write_bytes(buffer.getvalue()[: whole_blocks + 40])
    out = tmp_path / "out"
    result = backfill(path, out, "avro")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_reconciled(out, 200 + 1)
    assert sum(b["trade_count"] for b in bars_of(out) if not b["is_filled"]) == 200
    [letter] = dead_letters(out)
    assert (letter["reason"], letter["stage"], letter["source_offset"]) == ("unreadable_file", "read", 201)
