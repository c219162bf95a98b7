"""Hostile input at scale: every input format, over ten thousand hostile records each, no crash,
exact accounting, and no bar value that is not finite.

Two kinds of examples:
- mutation runs: per format, valid records (real lines of the bundled data for Binance aggTrades)
  mutated at random, many files packed into one pipeline run, read as a backfill reads them;
- hypothesis runs: generated lines and rows, shrunk to a small case when one fails.

Hostile means: truncated records, fields dropped, added and swapped, wrong types, NaN and Inf,
numbers past the float range (1.7e308, 1e154 x 1e154) and subnormal ones (1e-320), integers past
64 bits, dates in 1970 and 2200, stray and non-UTF-8 bytes, lone surrogates, deep JSON nesting,
very long fields, duplicated records and, for Parquet and Avro, odd column types: binary text,
uint64 times, timestamps of every unit, lists and structs, repeated columns. Every record must
end up in a bar, as a duplicate, or as a dead letter.

``CRYPTOBEAM_FUZZ_RECORDS`` (records per format), ``CRYPTOBEAM_FUZZ_SEED`` and
``CRYPTOBEAM_FUZZ_EXAMPLES`` (hypothesis examples) scale a run up or vary it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import zipfile
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from io_connectors.files import InputFile
from io_connectors.formats.ethereum_etl import TOKEN_TRANSFER_EXPORT
from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import read_raw_batches
from tests.support.commands import cryptobeam, run_backfill
from tests.support.fuzz_tally import LINES_RUN
from tests.support.helpers import run_trades_to_bars
from tests.support.paths import ROOT
from transforms.bar_spec import BarSpec

EXAMPLES = int(os.environ.get("CRYPTOBEAM_FUZZ_EXAMPLES", "8"))
RECORDS_PER_FORMAT = int(os.environ.get("CRYPTOBEAM_FUZZ_RECORDS", "10500"))
SEED = int(os.environ.get("CRYPTOBEAM_FUZZ_SEED", "21"))
BAR_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume")

TOKEN_TRANSFER_COLUMNS = TOKEN_TRANSFER_EXPORT.etl_columns
MS = 1_704_067_200_000  # 2024-01-01 in ms
US = MS * 1000
SPAN_MS = 600_000  # trades fall in ten minutes: few windows, so a run's cost is its records, not its keys

# ---------------------------------------------------------------------- the hostile values

HUGE_AND_TINY = [
    "1.7e308",
    "1.7976931348623157e308",
    "1e154",
    "1e280",
    "1e281",
    "1e300",
    "1e400",
    "-1e400",
    "1e-320",
    "5e-324",
    "2.2250738585072014e-308",
    "1e-160",
    "1e-200",
    "9" * 400,
]
BAD_NUMBERS = [
    "",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "-1",
    "0",
    "-0.0",
    "1e",
    ".",
    "+.5",
    "0x1F",
    "1_000",
    "\uff11\uff12",
    "1.2.3",
    "1,5",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999",
    str(7_258_118_400_000),
    "-5",
]
BAD_TEXT = [
    "abc",
    "\x00",
    "True",
    "maybe",
    "[]",
    "{",
    '"',
    "'",
    "\u202e",
    "\ufeff",
    "../../x",
    "..",
    "x" * 5000,
    "\u00e9",
    "\u0130",
    "\u212a",
    "'; DROP TABLE",
    "1970-01-01T00:00:00Z",
    "2200-01-01T00:00:00Z",
]
BAD_BYTES = [b"\xff", b"\xe9", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\xef\xbb\xbf"]
ANY_TOKEN = HUGE_AND_TINY + BAD_NUMBERS + BAD_TEXT


def _mutated_fields(fields: list[str], rng: random.Random) -> list[str]:
    fields = list(fields)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        i = rng.randrange(len(fields)) if fields else 0
        if kind < 0.3 and fields:
            fields[i] = rng.choice(HUGE_AND_TINY)
        elif kind < 0.55 and fields:
            fields[i] = rng.choice(BAD_NUMBERS + BAD_TEXT)
        elif kind < 0.65 and fields:
            del fields[i]
        elif kind < 0.75:
            fields.insert(i, rng.choice(ANY_TOKEN))
        elif kind < 0.85 and len(fields) > 1:
            j = rng.randrange(len(fields))
            fields[i], fields[j] = fields[j], fields[i]
        elif fields:
            fields[i] = fields[i] + rng.choice(ANY_TOKEN)
    return fields


def _with_bad_bytes(line: bytes, rng: random.Random) -> bytes:
    at = rng.randint(0, len(line))
    return line[:at] + rng.choice(BAD_BYTES) + line[at:]


def _record_bytes(line: bytes) -> bytes:
    """Lines are records unless blank. A line of only whitespace (Unicode's or ASCII's) is left
    out, so that which lines are records is never in doubt; no line holds a line break."""
    line = line.replace(b"\n", b" ").replace(b"\r", b" ")
    return line if re.search(rb"[!-~]", line) else b""


def hostile_lines(valid_fields, rng: random.Random, n: int, join=",".join) -> list[bytes]:
    """n lines: about a third valid, the rest mutated, some repeated (duplicates and conflicts)."""
    lines: list[bytes] = []
    while len(lines) < n:
        roll = rng.random()
        if roll < 0.05 and lines:
            lines.append(rng.choice(lines))  # a repeated record
            continue
        fields = valid_fields(rng)
        if roll < 0.35:
            text = join(fields)
        else:
            text = join(_mutated_fields(fields, rng))
        line = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            line = line[: rng.randint(0, len(line))]
        if rng.random() < 0.08:
            line = _with_bad_bytes(line, rng)
        lines.append(_record_bytes(line))
    return lines


def _price(rng) -> str:
    return rng.choice([f"{rng.uniform(0.01, 70_000):.8f}", str(rng.randint(1, 10**6)), f"{rng.uniform(1e-8, 1):.10f}"])


def _amount(rng) -> str:
    return rng.choice([f"{rng.uniform(1e-6, 1000):.8f}", str(rng.randint(1, 10**4))])


def _time_ms(rng) -> int:
    return MS + rng.randrange(SPAN_MS)


def _bundled_agg_lines() -> list[list[str]]:
    """Real lines of the bundled data, valid aggTrades to mutate, their times folded into the span."""
    with zipfile.ZipFile(ROOT / "data" / "XRPETH-aggTrades-2019-10-11.zip") as archive:
        lines = [line.split(",") for line in archive.read(archive.namelist()[0]).decode().splitlines()]
    start = int(lines[0][5])
    return [fields[:5] + [str(start + (int(fields[5]) - start) % SPAN_MS)] + fields[6:] for fields in lines]


BUNDLED_AGG = _bundled_agg_lines()


def binance_agg_fields(rng):
    return list(rng.choice(BUNDLED_AGG))


def binance_trade_fields(rng):
    i = rng.randint(1, 5000)
    time = _time_ms(rng) * rng.choice([1, 1000])  # ms or µs
    return [str(i), _price(rng), _amount(rng), _amount(rng), str(time), rng.choice(["true", "false", "True"]), "true"]


def tardis_fields(rng):
    t = _time_ms(rng) * 1000
    return [
        "binance",
        rng.choice(["BTCUSDT", "ETHUSDT", "../../x", "a/b"]),
        str(t),
        rng.choice([str(t + 5), ""]),
        rng.choice([str(rng.randint(1, 5000)), ""]),
        rng.choice(["buy", "sell", "unknown", "BUY", "long"]),
        _price(rng),
        _amount(rng),
    ]


def kraken_fields(rng):
    return [f"{_time_ms(rng) / 1000:.4f}", _price(rng), _amount(rng)]


COINBASE_TIMES = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:59:59.999999+00:00",
    "2024-01-01T00:00:00",
    "yesterday",
    "1970-01-01T00:00:00Z",
    "2200-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2024-02-30T00:00:00Z",
]
JSON_HOSTILE = [
    10**400,
    -(10**30),
    1.7e308,
    1e154,
    1e-320,
    float("inf"),
    float("nan"),
    True,
    None,
    "",
    [],
    {},
    [[[[["deep"]]]]],
    {"a": {"b": 1}},
    "\ud800",
    "x" * 5000,
    "1e400",
    "NaN",
]


def coinbase_record(rng) -> dict:
    seconds = rng.randrange(SPAN_MS // 1000)
    return {
        "trade_id": rng.randint(1, 5000),
        "price": _price(rng),
        "size": _amount(rng),
        "side": rng.choice(["buy", "sell", "BUY"]),
        "time": f"2024-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}.{rng.randrange(10**6):06d}Z",
        **({"product_id": rng.choice(["BTC-USD", "ETH-USD"])} if rng.random() < 0.5 else {}),
    }


def coinbase_lines(rng: random.Random, n: int) -> list[bytes]:
    """JSON lines: values of every JSON type, missing and repeated keys, deep nesting, cut text."""
    lines: list[bytes] = []
    while len(lines) < n:
        record, roll = coinbase_record(rng), rng.random()
        if roll < 0.3:
            text = json.dumps(record)
        elif roll < 0.6:
            record[rng.choice(list(record))] = rng.choice(JSON_HOSTILE + ANY_TOKEN)
            text = json.dumps(record)
        elif roll < 0.7:
            del record[rng.choice(list(record))]
            text = json.dumps(record)
        elif roll < 0.75:
            record["time"] = rng.choice(COINBASE_TIMES)
            text = json.dumps(record)
        elif roll < 0.8:  # a key given twice: the last one wins, as for any JSON reader
            text = json.dumps(record)[:-1] + f', "price": {json.dumps(rng.choice(HUGE_AND_TINY))}}}'
        elif roll < 0.85:
            depth = rng.choice([10, 999, 1001, 5000, 100_000])
            text = rng.choice(["[", '{"a":']) * depth
        elif roll < 0.9:
            text = rng.choice(["[]", "null", "1", '"text"', "{}", "[1, 2]", '{"trade_id": 1}'])
        else:
            text = json.dumps(record)
            text = text[: rng.randint(0, len(text))]
        line = text.encode("utf-8", "surrogatepass")  # a lone surrogate, if any, as its (invalid) UTF-8 bytes
        if rng.random() < 0.05:
            line = _with_bad_bytes(line, rng)
        lines.append(_record_bytes(line))
    return lines


def text_lines(name: str, rng: random.Random, n: int) -> list[bytes]:
    if name == "coinbase-trades":
        return coinbase_lines(rng, n)
    fields = {
        "binance-aggtrades": binance_agg_fields,
        "binance-trades": binance_trade_fields,
        "tardis-trades": tardis_fields,
        "kraken-trades": kraken_fields,
    }[name]
    return hostile_lines(fields, rng, n)


# File names give the symbol; one file per archive kind the format is distributed in.
TEXT_FILES = {
    "binance-aggtrades": ("XRPETH-aggTrades-2019-10-{day:02d}", [".csv", ".zip"]),
    "binance-trades": ("BTCUSDT-trades-2024-01-{day:02d}", [".csv", ".zip"]),
    "tardis-trades": ("binance_trades_2024-01-{day:02d}", [".csv", ".csv.gz"]),
    "coinbase-trades": ("BTC-USD_2024-01-{day:02d}", [".jsonl"]),
    "kraken-trades": ("XBTUSD_{day:02d}", [".csv"]),
}
HEADERS = {
    "binance-aggtrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match",
    "tardis-trades": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
}


def write_text_file(path: Path, lines: list[bytes], header: str | None) -> int:
    """Write the lines (a correct header first, when given); return how many are records."""
    body = ([header.encode()] if header else []) + lines
    data = b"\n".join(body) + b"\n"
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(path.name[:-4] + ".csv", data)
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return sum(1 for line in lines if line)


def write_text_files(name: str, directory: Path, rng: random.Random, records: int) -> tuple[list[Path], int]:
    stem, suffixes = TEXT_FILES[name]
    paths, total, per_file = [], 0, records // 4 + 1
    for day in range(1, 5):
        path = directory / (stem.format(day=day) + suffixes[day % len(suffixes)])
        lines = text_lines(name, rng, per_file)
        header = HEADERS.get(name) if day % 2 else None
        total += write_text_file(path, lines, header)
        paths.append(path)
    return paths, total


# ---------------------------------------------------------------------- hostile Parquet and Avro


def _float_values(rng, n):
    return [
        rng.choice(
            [
                float(rng.uniform(0.01, 1000)),
                float(rng.uniform(0.01, 1000)),
                float(rng.choice(HUGE_AND_TINY[:3] + HUGE_AND_TINY[8:11])),
                math.nan,
                math.inf,
                -1.0,
                0.0,
                None,
            ]
        )
        for _ in range(n)
    ]


def _text_values(rng, n, valid):
    return [rng.choice(valid * 4 + ["", None, "\u202e", "x" * 300]) for _ in range(n)]


def _bytes_values(rng, n, valid):
    return [
        None if v is None else (v.encode() + rng.choice(BAD_BYTES) if rng.random() < 0.1 else v.encode())
        for v in _text_values(rng, n, valid)
    ]


def _time_us(rng) -> int:
    return US + rng.randrange(SPAN_MS * 1000)


def _times(rng, n):
    return [rng.choice([_time_us(rng)] * 6 + [None, -5, 0, 2**62, US * 10]) for _ in range(n)]


def parquet_column(name: str, rng: random.Random, n: int) -> pa.Array:
    """A column of one of the types a file in the wild might give it, holding hostile values."""
    texts = {
        "exchange": ["binance", "kraken"],
        "symbol": ["BTCUSDT", "ETHUSDT", "../../x"],
        "side": ["buy", "sell", "BUY", "unknown", "long"],
        "base": ["BTC"],
        "quote": ["USDT"],
    }
    kind = rng.random()
    if name in texts:
        if kind < 0.5:
            return pa.array(_text_values(rng, n, texts[name]), pa.string())
        if kind < 0.75:
            return pa.array(_bytes_values(rng, n, texts[name]), pa.binary())
        if kind < 0.85:
            return pa.array(_text_values(rng, n, texts[name]), pa.string()).dictionary_encode()
        if kind < 0.9:
            return pa.array(_text_values(rng, n, texts[name]), pa.large_string())
        if kind < 0.95:
            return pa.array([None if rng.random() < 0.5 else [v] for v in _text_values(rng, n, texts[name])])
        return pa.array([rng.randint(-5, 5) for _ in range(n)], pa.int64())
    if name == "trade_id":
        if kind < 0.5:
            return pa.array([str(rng.randint(1, 3000)) for _ in range(n)], pa.string())
        if kind < 0.7:
            return pa.array([rng.randint(1, 3000) for _ in range(n)], pa.int64())
        if kind < 0.8:
            return pa.array([rng.choice([rng.randint(1, 3000), 2**64 - 1]) for _ in range(n)], pa.uint64())
        if kind < 0.9:
            return pa.array(_bytes_values(rng, n, [str(rng.randint(1, 3000))]), pa.binary())
        return pa.array([{"id": rng.randint(1, 9)} for _ in range(n)])
    if name in ("price", "amount"):
        if kind < 0.5:
            return pa.array(_float_values(rng, n), pa.float64())
        if kind < 0.65:
            return pa.array([rng.choice(ANY_TOKEN + [_price(rng)] * 10) for _ in range(n)], pa.string())
        if kind < 0.75:
            return pa.array(_float_values(rng, n), pa.float64()).cast(pa.float32(), safe=False)
        if kind < 0.85:
            return pa.array([rng.choice([rng.randint(1, 100), 2**64 - 1, 0]) for _ in range(n)], pa.uint64())
        if kind < 0.95:
            return pa.array(_bytes_values(rng, n, [_price(rng)]), pa.binary())
        return pa.array([[1.0, 2.0] for _ in range(n)])
    # event_time, receive_time
    if kind < 0.4:
        return pa.array(_times(rng, n), pa.int64())
    if kind < 0.55:
        return pa.array([rng.choice([_time_us(rng), 2**63, 2**64 - 1]) for _ in range(n)], pa.uint64())
    if kind < 0.75:
        unit = rng.choice(["s", "ms", "us", "ns"])
        scale = {"s": 10**-6, "ms": 10**-3, "us": 1, "ns": 1000}[unit]
        values = [None if t is None else int(t * scale) for t in _times(rng, n)]
        return pa.array(values, pa.int64()).cast(pa.timestamp(unit, tz=rng.choice([None, "UTC"])))
    if kind < 0.85:
        return pa.array([rng.choice([float(_time_us(rng)), math.nan, 1e300, 0.5]) for _ in range(n)], pa.float64())
    if kind < 0.95:
        return pa.array(
            [rng.choice([str(_time_us(rng)), "2024-01-01T00:00:00Z", "", "-1"]) for _ in range(n)], pa.string()
        )
    return pa.array([[t] for t in _times(rng, n)])


def hostile_parquet_table(rng: random.Random, n: int) -> pa.Table:
    names = ["exchange", "symbol", "trade_id", "price", "amount", "side", "event_time"]
    names += [name for name in ("base", "quote", "receive_time") if rng.random() < 0.3]
    roll = rng.random()
    if roll < 0.05:
        names.remove(rng.choice(names))  # a missing column
    elif roll < 0.1:
        names.append(rng.choice(names))  # a repeated column
    elif roll < 0.15:
        names.append("note")  # a column the parser does not read
    return pa.Table.from_arrays([parquet_column(name, rng, n) for name in names], names=names)


def write_parquet_files(directory: Path, rng: random.Random, records: int) -> tuple[list[Path], int]:
    paths, total = [], 0
    while total < records:
        table = hostile_parquet_table(rng, rng.randint(200, 900))
        path = directory / f"trades-{len(paths):03d}.parquet"
        pq.write_table(table, path, row_group_size=rng.choice([50, 1000]))
        paths.append(path)
        total += table.num_rows
    return paths, total


AVRO_TYPES = {
    "string": lambda rng, valid: rng.choice(valid * 3 + ["", "\u202e", "x" * 300]),
    "bytes": lambda rng, valid: rng.choice(valid).encode() + (rng.choice(BAD_BYTES) if rng.random() < 0.1 else b""),
    "double": lambda rng, valid: rng.choice(_float_values(rng, 1) * 3 + [1e308, -0.0]) or 0.0,
    "long": lambda rng, valid: rng.choice([rng.randint(1, 5000), _time_us(rng), -(2**63), 2**63 - 1]),
}


def _avro_field_types(rng) -> dict[str, str]:
    """One Avro type per field for the whole file (Avro has one schema per file)."""
    return {
        "exchange": rng.choice(["string", "string", "bytes"]),
        "symbol": rng.choice(["string", "bytes"]),
        "trade_id": rng.choice(["string", "long", "bytes"]),
        "price": rng.choice(["double", "double", "string"]),
        "amount": rng.choice(["double", "string", "long"]),
        "side": rng.choice(["string", "bytes"]),
        "event_time": rng.choice(["long", "long", "double", "string"]),
    }


def _avro_value(name: str, kind: str, rng):
    valid = {
        "exchange": ["binance"],
        "symbol": ["BTCUSDT", "ETHUSDT"],
        "side": ["buy", "sell", "long"],
        "trade_id": [str(rng.randint(1, 3000))],
        "price": [_price(rng)],
        "amount": [_amount(rng)],
        "event_time": [str(_time_us(rng))],
    }[name]
    if name == "event_time" and kind == "long":
        return rng.choice([_time_us(rng)] * 5 + [-(2**63), 2**63 - 1, 0])
    if name == "event_time" and kind == "double":
        return rng.choice([float(_time_us(rng)), math.nan, 1e300])
    if kind == "string" and name in ("price", "amount") and rng.random() < 0.3:
        return rng.choice(ANY_TOKEN)
    return AVRO_TYPES[kind](rng, valid)


def write_avro_files(directory: Path, rng: random.Random, records: int) -> tuple[list[Path], int]:
    paths, total = [], 0
    while total < records:
        types = _avro_field_types(rng)
        nullable = {name for name in types if rng.random() < 0.2}
        schema = {
            "type": "record",
            "name": "Trade",
            "fields": [
                {"name": name, "type": ["null", kind] if name in nullable else kind} for name, kind in types.items()
            ],
        }
        rows = [
            {
                name: (None if name in nullable and rng.random() < 0.1 else _avro_value(name, kind, rng))
                for name, kind in types.items()
            }
            for _ in range(rng.randint(300, 1200))
        ]
        path = directory / f"trades-{len(paths):03d}.avro"
        with open(path, "wb") as handle:
            fastavro.writer(handle, fastavro.parse_schema(schema), rows)
        paths.append(path)
        total += len(rows)
    return paths, total


# ---------------------------------------------------------------------- one pipeline run, as a backfill runs


def run_backfill_pipeline(source_name: str, paths: list[Path], batch_rows: int):
    """Read the files as a backfill does (unreadable files, long lines and all), then TradesToBars."""
    import apache_beam as beam

    from beam_pipelines.accounting import counters_of
    from io_connectors.sources import ReadTradeFiles
    from runners.profiles import in_process_runner
    from tests.support.helpers import Collect
    from transforms.trades_to_bars import TradesToBars

    source = SOURCES[source_name]
    files = [InputFile(str(p), p.stat().st_size) for p in paths]
    pipeline = beam.Pipeline(runner=in_process_runner())
    read = pipeline | ReadTradeFiles(source, files, batch_rows)
    results = read.raw | TradesToBars(BarSpec.of("1m", fill_gaps=True), parser_for(source))
    results["bars"] | "CollectBars" >> beam.Map(Collect("fuzz_bars"))
    (read.dead_letter, results["dead_letters"]) | beam.Flatten() | "CollectDead" >> beam.Map(Collect("fuzz_dead"))
    result = pipeline.run()
    result.wait_until_finish()
    from tests.support.helpers import COLLECTED

    return list(COLLECTED["fuzz_bars"]), list(COLLECTED["fuzz_dead"]), counters_of(result)


def assert_reconciled(name: str, records: int, bars, dead, counters) -> None:
    assert counters.get("records_in", 0) == records
    in_bars = sum(b["trade_count"] for b in bars if not b["is_filled"])
    assert records == in_bars + len(dead) + counters.get("duplicates", 0)
    assert all(d["reason"] and d["source"] for d in dead)
    assert all(d["source_offset"] for d in dead if d["reason"] != "unreadable_file")
    for bar in bars:
        assert all(bar[v] is None or math.isfinite(bar[v]) for v in BAR_VALUES), bar
        assert bar["volume"] > 0 or bar["is_filled"], bar
    LINES_RUN["lines"] += records
    LINES_RUN["examples"] += 1
    LINES_RUN["by_format"][name] += records


WRITERS = {"parquet": write_parquet_files, "avro": write_avro_files}


@pytest.mark.parametrize("name", sorted(name for name, source in SOURCES.items() if source.record_type == "trade"))
def test_every_format_survives_ten_thousand_mutated_records(tmp_path, name):
    rng = random.Random(f"{SEED}:{name}")
    if name in WRITERS:
        paths, records = WRITERS[name](tmp_path, rng, RECORDS_PER_FORMAT)
    else:
        paths, records = write_text_files(name, tmp_path, rng, RECORDS_PER_FORMAT)
    bars, dead, counters = run_backfill_pipeline(name, paths, batch_rows=rng.choice([997, 2500]))
    assert_reconciled(name, records, bars, dead, counters)
    assert any(not b["is_filled"] for b in bars), "some records should have been valid"
    assert {d["source"].split("!")[0] for d in dead} <= {str(p) for p in paths}


# ---------------------------------------------------------------------- on-chain formats

CHAIN_TOKENS = ["0xdac17f958d2ee523a2206206994597c13d831ec7", "0x" + "ab" * 20, "0x" + "cd" * 20]
FIRST_BLOCK = 19_000_000
CHAIN_BLOCKS = 200
CHAIN_VALUES = ["0", "1", str(2**64 + 1), str(2**256 - 1), str(2**256), "-1", "1e18", "1.5", "0x10", "1" * 80]


def _hex(rng: random.Random, digits: int) -> str:
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(digits))


def _block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


def _block_seconds(number: int) -> int:
    return MS // 1000 + 12 * (number - FIRST_BLOCK)


def transfer_fields(rng: random.Random) -> list[str]:
    """ethereum-etl's token_transfers columns, then our export's block hash and time."""
    number = FIRST_BLOCK + rng.randrange(CHAIN_BLOCKS)
    return [
        rng.choice(CHAIN_TOKENS),
        _hex(rng, 40),
        _hex(rng, 40),
        rng.choice(CHAIN_VALUES) if rng.random() < 0.2 else str(rng.randrange(2 ** rng.choice([8, 64, 200]))),
        _hex(rng, 64),
        str(rng.randrange(300)),
        str(number),
        _block_hash(number),
        str(_block_seconds(number)),
    ]


BLOCK_COLUMNS = "number,hash,parent_hash,timestamp,miner,gas_used,gas_limit,base_fee_per_gas,transaction_count"


def block_fields(rng: random.Random) -> list[str]:
    number = FIRST_BLOCK + rng.randrange(CHAIN_BLOCKS)
    return [
        str(number),
        _block_hash(number),
        _block_hash(number - 1),
        str(_block_seconds(number)),
        _hex(rng, 40),
        str(rng.randrange(30_000_000)),
        "30000000",
        rng.choice(["", str(rng.randrange(10**11))]),
        str(rng.randrange(400)),
    ]


def test_on_chain_formats_survive_mutated_records(tmp_path):
    """Hostile ethereum-etl blocks and token transfers (transfers with their block, and bare ones
    the run joins with the blocks), in one backfill of the on-chain tables: no crash, and every
    record is in the aggregates, a duplicate, retracted or a dead letter."""
    rng = random.Random(f"{SEED}:chain")
    per_file = RECORDS_PER_FORMAT // 8 + 1
    written = {"token_transfer": 0, "block": 0}
    inputs = []
    for index in range(2):
        path = tmp_path / f"token_transfers_{index}.csv"
        header = ",".join((*TOKEN_TRANSFER_COLUMNS, "block_hash", "block_timestamp"))
        written["token_transfer"] += write_text_file(path, hostile_lines(transfer_fields, rng, per_file), header)
        inputs.append(f"ethereum-etl-token-transfers:{path}")
    bare = tmp_path / "token_transfers_bare.csv"
    bare_lines = hostile_lines(lambda r: transfer_fields(r)[: len(TOKEN_TRANSFER_COLUMNS)], rng, per_file)
    written["token_transfer"] += write_text_file(bare, bare_lines, ",".join(TOKEN_TRANSFER_COLUMNS))
    blocks = tmp_path / "blocks.csv"
    written["block"] += write_text_file(blocks, hostile_lines(block_fields, rng, per_file), BLOCK_COLUMNS)
    inputs += [f"ethereum-etl-token-transfers:{bare}", f"ethereum-etl-blocks:{blocks}"]
    out = tmp_path / "out"
    arguments = [argument for given in inputs for argument in ("--input", given)]
    result = cryptobeam(
        "backfill", *arguments, "--bars", "chain:1m", "--batch-rows", str(rng.choice([97, 250])),
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"], summary.get("problems")
    assert summary["token_transfers"]["records_in"] == written["token_transfer"]
    assert summary["blocks"]["records_in"] == written["block"]
    assert summary["token_transfers"]["in_aggregates"] > 0, "some transfers should have been valid"
    transfers, blocks = summary["token_transfers"], summary["blocks"]
    assert transfers["records_in"] > transfers["in_aggregates"] + transfers["duplicates"], "mutations are dead letters"
    assert blocks["records_in"] > blocks["used"] + blocks["duplicates"], "mutations are dead letters"


# ---------------------------------------------------------------------- hypothesis: small cases that shrink

hostile_token = st.sampled_from(ANY_TOKEN)
number = st.one_of(st.integers(1, 10**6).map(str), st.floats(1e-6, 1e6).map(lambda f: f"{f:.8f}"))
epoch_ms = st.integers(MS, MS + 3_600_000)


def mutate(fields: list[str], data) -> str:
    """Replace, drop or add fields, or cut the line short."""
    choice = data.draw(st.integers(0, 4))
    if choice == 0:
        return ",".join(fields)
    if choice == 1:
        i = data.draw(st.integers(0, len(fields) - 1))
        fields = fields[:i] + [data.draw(hostile_token)] + fields[i + 1 :]
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
    return mutate(
        [
            str(i),
            data.draw(number),
            data.draw(number),
            str(i),
            str(i),
            str(data.draw(epoch_ms)),
            data.draw(st.sampled_from(["True", "False"])),
            "True",
        ],
        data,
    )


def binance_trade_line(data):
    i = data.draw(st.integers(1, 60))
    return mutate(
        [
            str(i),
            data.draw(number),
            data.draw(number),
            data.draw(number),
            str(data.draw(epoch_ms) * 1000),
            data.draw(st.sampled_from(["true", "false"])),
        ],
        data,
    )


def tardis_line(data):
    t = data.draw(epoch_ms) * 1000
    return mutate(
        [
            "binance",
            data.draw(st.sampled_from(["BTCUSDT", "../../x", "a/b", ".."])),
            str(t),
            str(t + 5),
            str(data.draw(st.integers(1, 60))),
            data.draw(st.sampled_from(["buy", "sell", "unknown", "long"])),
            data.draw(number),
            data.draw(number),
        ],
        data,
    )


def kraken_line(data):
    return mutate([str(data.draw(epoch_ms) / 1000), data.draw(number), data.draw(number)], data)


def coinbase_line(data):
    record = {
        "trade_id": data.draw(st.integers(1, 60)),
        "price": data.draw(number),
        "size": data.draw(number),
        "side": data.draw(st.sampled_from(["buy", "sell", "up"])),
        "time": data.draw(
            st.sampled_from(
                [
                    "2024-01-01T00:00:01.5Z",
                    "2024-01-01T00:30:00Z",
                    "1970-01-01T00:00:00Z",
                    "2200-01-01T00:00:00Z",
                    "yesterday",
                ]
            )
        ),
    }
    if data.draw(st.booleans()):
        record[data.draw(st.sampled_from(list(record)))] = data.draw(
            st.one_of(hostile_token, st.integers(), st.none(), st.sampled_from(JSON_HOSTILE))
        )
    text = json.dumps(record)
    return text[: data.draw(st.integers(0, len(text)))] if data.draw(st.integers(0, 4)) == 0 else text


FORMATS = {
    "binance-aggtrades": ("BTCUSDT-aggTrades-2024-01-01.csv", binance_agg_line, None),
    "binance-trades": ("BTCUSDT-trades-2024-01-01.csv", binance_trade_line, None),
    "tardis-trades": ("binance_trades_2024-01-01.csv", tardis_line, HEADERS["tardis-trades"]),
    "kraken-trades": ("XBTUSD.csv", kraken_line, None),
    "coinbase-trades": ("BTC-USD_2024-01-01.jsonl", coinbase_line, None),
}


def hostile_bytes(line: str, data) -> bytes:
    raw = line.encode("utf-8", "surrogatepass")
    if data.draw(st.integers(0, 9)) == 0:
        raw = raw[:1] + b"\xe9\xff" + raw[1:]  # not UTF-8
    return _record_bytes(raw)


def run_file(source_name: str, path: Path):
    source = SOURCES[source_name]
    raws = list(read_raw_batches(source, str(path), batch_rows=37))
    return run_trades_to_bars(raws, BarSpec.of("1m", fill_gaps=True), parser_for(source))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), name=st.sampled_from(sorted(FORMATS)))
def test_text_formats_never_crash_and_always_reconcile(tmp_path_factory, data, name):
    file_name, make_line, header = FORMATS[name]
    lines = [hostile_bytes(make_line(data), data) for _ in range(data.draw(st.integers(20, 150)))]
    if data.draw(st.booleans()):
        lines.insert(data.draw(st.integers(0, len(lines))), b"")  # blank lines are not records
    path = tmp_path_factory.mktemp(name) / file_name
    records = write_text_file(path, lines, header)
    bars, dead, counters = run_file(name, path)
    assert_reconciled(name, records, bars, dead, counters)
    assert all(d["source"] == str(path) for d in dead)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["BTCUSDT", "../../x"])),
            st.integers(1, 40),
            st.one_of(hostile_token, number),
            st.one_of(hostile_token, number),
            st.one_of(st.none(), epoch_ms.map(lambda ms: ms * 1000), st.just(-5), st.just(2**62), st.just(-(2**62))),
        ),  # past what a datetime holds
        min_size=1,
        max_size=120,
    )
)
def test_parquet_never_crashes_and_always_reconciles(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("pq") / "trades.parquet"
    pq.write_table(
        pa.table(
            {
                "exchange": ["binance"] * len(rows),
                "symbol": [r[0] for r in rows],
                "trade_id": [str(r[1]) for r in rows],
                "price": [r[2] for r in rows],
                "amount": [r[3] for r in rows],
                "side": ["buy"] * len(rows),
                "event_time": pa.array([r[4] for r in rows], pa.int64()),
            }
        ),
        path,
    )
    bars, dead, counters = run_file("parquet", path)
    assert_reconciled("parquet", len(rows), bars, dead, counters)


def test_hostile_symbols_never_leave_the_output_directory(tmp_path):
    path = tmp_path / "trades.csv"
    symbols = ["../../escape", "..", "a/b", "/etc/passwd", "%2e%2e", "ok"]
    lines = [
        f"binance,{s},{1704067200000000 + i},{1704067200000000 + i},{i},buy,1.0,1.0" for i, s in enumerate(symbols)
    ]
    path.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run_backfill("tardis-trades", path, out)
    assert result.returncode == 0, result.stderr
    root = out.resolve()
    written = [p.resolve() for p in tmp_path.rglob("*") if p.is_file() and p != path]
    assert written and all(root in p.parents for p in written)
    assert sorted(pq.read_table(out / "bars").column("symbol").to_pylist()) == sorted(symbols)
