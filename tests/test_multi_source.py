"""Several sources in one backfill (``--input SOURCE:GLOB``): each file is parsed by its own source's
parser, and the run's bars, dead letters and counts are those of one run per source put together.
Also: the run settings a resumed run compares, and chunks cut at UTC days for information bars."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines import cli
from beam_pipelines.backfill_config import BackfillConfig
from beam_pipelines.chunk_planning import DAY_SECONDS, Chunk, cut_boundaries, split_large_chunks
from beam_pipelines.chunked_backfill import run_settings
from io_connectors.bar_reader import final_bars
from io_connectors.files import InputFile, match_inputs
from io_connectors.source_formats import SOURCES, split_source_prefix
from tests.support.backfills import write_days
from tests.support.outputs import summary
from transforms.bar_kinds import parse_threshold
from transforms.bar_spec import BarSpec
from transforms.interval import parse_interval

DAY_US = DAY_SECONDS * 1_000_000
FIRST_DAY = date(2024, 1, 1)


def write_coinbase_days(folder: Path, days: int, per_day: int = 300, seed: int = 9) -> None:
    """Daily Coinbase JSON-lines files of BTC-USD, each with a repeated trade and a broken line."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    trade_id, price = 500_000, 42000.0
    for d in range(days):
        day = FIRST_DAY + timedelta(days=d)
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        lines = []
        for offset_ms in sorted(rng.randrange(0, 86_400_000) for _ in range(per_day)):
            price = round(price * (1 + rng.gauss(0, 3e-4)), 2)
            moment = start + timedelta(milliseconds=offset_ms)
            lines.append(
                json.dumps(
                    {
                        "time": moment.isoformat().replace("+00:00", "Z"),
                        "trade_id": trade_id,
                        "price": f"{price:.2f}",
                        "size": f"{rng.randint(1, 900) / 1000:.3f}",
                        "side": rng.choice(["buy", "sell"]),
                    }
                )
            )
            trade_id += 1
        lines.insert(per_day // 2, lines[per_day // 3])  # a duplicate
        lines.insert(per_day // 4, "{not json")
        (folder / f"BTC-USD_{day.isoformat()}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    write_days(folder / "binance", 2, per_day=400)
    write_coinbase_days(folder / "coinbase", 2)
    return folder


def backfill(out: Path, *options: str) -> int:
    return cli.main(["backfill", *options, "--interval", "1m", "--out", str(out), "--no-progress", "--workers", "1"])


def bars(out: Path) -> list[dict]:
    rows = [{k: v for k, v in bar.items() if k != "file"} for bar in final_bars(str(out))]
    return sorted(rows, key=lambda b: (b["exchange"], b["symbol"], b["window_start"]))


def dead_letters(out: Path) -> list[tuple]:
    if not (out / "dead_letter").exists():  # a run without dead letters writes none
        return []
    rows = pq.read_table(out / "dead_letter").to_pylist()
    return sorted((r["reason"], r["source"], r["source_offset"], r["payload_string"]) for r in rows)


@pytest.fixture(scope="module")
def single_runs(inputs, tmp_path_factory):
    """One run per source, as before: --source and --input."""
    outs = {}
    for source, pattern in (("binance-aggtrades", "binance/*.zip"), ("coinbase-trades", "coinbase/*.jsonl")):
        outs[source] = tmp_path_factory.mktemp(source) / "out"
        assert backfill(outs[source], "--source", source, "--input", str(inputs / pattern)) == 0
    return outs


@pytest.fixture(scope="module")
def multi_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "out"
    assert (
        backfill(
            out,
            "--input",
            f"binance-aggtrades:{inputs}/binance/*.zip",
            "--input",
            f"coinbase-trades:{inputs}/coinbase/*.jsonl",
        )
        == 0
    )
    return out


def test_a_run_of_two_sources_is_the_union_of_a_run_of_each(single_runs, multi_run):
    binance, coinbase = single_runs["binance-aggtrades"], single_runs["coinbase-trades"]
    assert {b["exchange"] for b in bars(binance)} == {"binance"} and {b["exchange"] for b in bars(coinbase)} == {
        "coinbase"
    }
    assert bars(multi_run) == sorted(
        bars(binance) + bars(coinbase), key=lambda b: (b["exchange"], b["symbol"], b["window_start"])
    )
    assert dead_letters(multi_run) == sorted(dead_letters(binance) + dead_letters(coinbase))
    assert [d[0] for d in dead_letters(multi_run)] == ["malformed", "malformed"]
    totals = summary(multi_run)
    for name in ("records_in", "duplicates", "dead_letters", "trades_in_final_bars"):
        assert totals[name] == summary(binance)[name] + summary(coinbase)[name], name
    assert totals["reconciled"] and totals["duplicates"] == 2 and totals["records_in"] == 800 + 2 * 302
    assert totals["source"] == ["binance-aggtrades", "coinbase-trades"]
    assert summary(binance)["source"] == "binance-aggtrades"
    [manifest] = (multi_run / "_manifests").glob("*.json")
    assert json.loads(manifest.read_text())["settings"]["source"] == ["binance-aggtrades", "coinbase-trades"]


def test_a_chunked_run_of_two_sources_equals_the_unchunked_one(inputs, multi_run, tmp_path):
    """Also the mixed form: inputs without a source are read as --source."""
    out = tmp_path / "out"
    assert (
        backfill(
            out,
            "--source",
            "coinbase-trades",
            "--input",
            str(inputs / "coinbase" / "*.jsonl"),
            "--input",
            f"binance-aggtrades:{inputs}/binance/*.zip",
            "--chunk",
            "1d",
        )
        == 0
    )
    assert bars(out) == bars(multi_run)
    assert dead_letters(out) == dead_letters(multi_run)
    assert summary(out)["chunks"] == 2 and summary(out)["reconciled"]
    manifests = [json.loads(m.read_text()) for m in sorted((out / "_manifests").glob("*.json"))]
    assert [len(m["inputs"]) for m in manifests] == [2, 2]  # each day: a Binance file and a Coinbase one
    assert summary(out)["records_in"] == summary(multi_run)["records_in"]
    assert cli.main(["validate", str(out)]) == 0
    # Run again: every chunk is found complete under the same settings.
    assert (
        backfill(
            out,
            "--input",
            f"coinbase-trades:{inputs}/coinbase/*.jsonl",
            "--input",
            f"binance-aggtrades:{inputs}/binance/*.zip",
            "--chunk",
            "1d",
        )
        == 0
    )
    assert summary(out)["chunks_skipped"] == 2


@pytest.mark.parametrize(
    "options, message",
    [
        (["--input", "{binance}"], "names no source: write SOURCE:"),
        (
            ["--input", "binance-aggtrades:{binance}", "--input", "coinbase-trades:{coinbase}", "--exchange", "x"],
            "--exchange names the exchange of every record",
        ),
        (
            ["--input", "binance-aggtrades:{binance}", "--input", "coinbase-trades:{binance}"],
            "is given both as binance-aggtrades and as coinbase-trades",
        ),
        (["--input", "nosuch:{binance}"], "names no source (no source is named 'nosuch')"),
        (["--source", "binance-aggtrades", "--input", "nosuch:{binance}"], "no input files matched 'nosuch:/"),
        (["--source", "nosuch", "--input", "{binance}"], "unknown source 'nosuch'"),
    ],
)
def test_input_mistakes_are_one_line_and_exit_2(inputs, tmp_path, capsys, options, message):
    paths = {"binance": str(inputs / "binance" / "*.zip"), "coinbase": str(inputs / "coinbase" / "*.jsonl")}
    code = backfill(tmp_path / "out", *[option.format(**paths) for option in options])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and message in error, error
    if any(option.startswith("nosuch:") for option in options):
        assert "(no source is named 'nosuch')" in error


def test_only_a_source_name_before_the_colon_names_a_source():
    assert split_source_prefix("binance-aggtrades:dumps/*.zip") == ("binance-aggtrades", "dumps/*.zip")
    assert split_source_prefix("parquet:gs://bucket/t/*.parquet") == ("parquet", "gs://bucket/t/*.parquet")
    for path in ("gs://bucket/t/*.parquet", "C:\\dumps\\a.zip", "dumps/*.zip", "nosuch:x", "./parquet:x"):
        assert split_source_prefix(path) == (None, path)


def test_replay_loads_every_source(inputs, single_runs):
    from io_connectors.replay import load_trades_of_sources
    from io_connectors.source_formats import parser_for

    parts = [
        (SOURCES[name], parser_for(SOURCES[name]), [f.path for f in match_inputs([str(inputs / pattern)])])
        for name, pattern in (("binance-aggtrades", "binance/*.zip"), ("coinbase-trades", "coinbase/*.jsonl"))
    ]
    trades, read, rejected = load_trades_of_sources(parts)
    assert (read, rejected) == (800 + 2 * 302, 2)
    assert trades.num_rows == 800 + 2 * 301  # replay publishes duplicates too: the stream dedupes them
    assert sorted(set(trades.column("exchange").to_pylist())) == ["binance", "coinbase"]


# ---------------------------------------------------------------------- run settings
def _config(spec: BarSpec, files: list[InputFile], source=SOURCES["binance-aggtrades"]) -> BackfillConfig:
    return BackfillConfig(source=source, files=files, spec=spec, out="/tmp/unused")


def test_run_settings_record_the_bar_kinds_only_when_not_time_bars_alone():
    files = [InputFile("/d/BTCUSDT-aggTrades-2024-01-01.zip", 1)]
    settings = run_settings(_config(BarSpec.of("1m"), files))
    assert "bars" not in settings and "time_bars" not in settings and settings["source"] == "binance-aggtrades"
    ticks = (parse_threshold("ticks", "1000"),)
    assert {
        k: v for k, v in run_settings(_config(BarSpec.of("1m", thresholds=ticks), files)).items() if k not in settings
    } == {"bars": ["ticks:1000"], "time_bars": True}
    only_ticks = run_settings(_config(BarSpec.of("1m", thresholds=ticks, time_bars=False), files))
    assert (only_ticks["bars"], only_ticks["time_bars"]) == (["ticks:1000"], False)
    both = [*files, InputFile("/d/BTC-USD_2024-01-01.jsonl", 1, "coinbase-trades")]
    assert run_settings(_config(BarSpec.of("1m"), both))["source"] == ["binance-aggtrades", "coinbase-trades"]
    assert run_settings(_config(BarSpec.of("1m"), both[1:], source=None))["source"] == "coinbase-trades"


# ---------------------------------------------------------------------- cuts at UTC days
def write_two_days_parquet(path: Path, n: int = 4000) -> None:
    times = np.sort(np.random.default_rng(4).integers(0, 2 * DAY_US, n)) + 1_704_067_200_000_000
    pq.write_table(
        pa.table(
            {
                "exchange": ["binance"] * n,
                "symbol": ["BTCUSDT"] * n,
                "trade_id": [str(i) for i in range(n)],
                "price": np.linspace(100, 110, n),
                "amount": np.full(n, 0.5),
                "side": ["buy"] * n,
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
        row_group_size=250,
    )


def test_parquet_is_cut_only_at_utc_days_when_information_bars_are_asked_for(tmp_path):
    path = tmp_path / "trades.parquet"
    write_two_days_parquet(path)
    whole = Chunk("all", (InputFile(str(path), path.stat().st_size, "parquet"),))
    interval = parse_interval("1m")
    by_windows = split_large_chunks([whole], None, interval, 100_000)
    assert any(p.time_slice.start_us % DAY_US for p in by_windows[1:])  # time bars alone: cut at any window
    by_days = split_large_chunks([whole], None, interval, 100_000, whole_days=True)
    starts = [p.time_slice.start_us for p in by_days]
    assert starts[0] is None and starts[1:] == [1_704_067_200_000_000 + DAY_US]
    assert by_days[0].time_slice.end_us == starts[1] and by_days[-1].time_slice.end_us is None


def test_cut_boundaries_are_window_starts_that_start_days():
    for text, seconds in (("1m", DAY_SECONDS), ("4h", DAY_SECONDS), ("5h", 5 * DAY_SECONDS), ("1d", DAY_SECONDS)):
        boundaries = cut_boundaries(parse_interval(text), whole_days=True)
        moment = 1_704_067_200_000_000 + 3 * DAY_US + 12_345_678_901
        start = boundaries.window_start_micros(moment)
        assert start % DAY_US == 0 and start % parse_interval(text).micros == 0
        assert moment - seconds * 1_000_000 < start <= moment
    hour = parse_interval("1h")
    assert cut_boundaries(hour, whole_days=False) is hour


def test_a_chunk_mixing_parquet_and_text_is_not_cut(tmp_path):
    path = tmp_path / "trades.parquet"
    write_two_days_parquet(path)
    mixed = Chunk(
        "all",
        (
            InputFile(str(path), path.stat().st_size, "parquet"),
            InputFile("/d/BTCUSDT-aggTrades-2024-01-01.csv", 10**9, "binance-aggtrades"),
        ),
    )
    assert split_large_chunks([mixed], None, parse_interval("1m"), 500) == [mixed]


@pytest.mark.pipeline
def test_information_bars_of_parquet_cut_into_chunks_equal_the_uncut_run(tmp_path):
    """Tick counts restart at each UTC day: a chunk starting mid-day would restart them there."""
    path = tmp_path / "trades.parquet"
    write_two_days_parquet(path)
    # 100,000 rows (windows count as rows too) would cut these two days into 4 pieces at window starts.
    outs = {rows: tmp_path / f"rows-{rows}" for rows in ("0", "100000")}
    for rows, out in outs.items():
        assert (
            backfill(out, "--source", "parquet", "--input", str(path), "--bars", "ticks:150", "--chunk-rows", rows) == 0
        )
    assert [summary(outs[rows])["chunks"] for rows in ("0", "100000")] == [1, 2]
    ticks = {
        rows: [{k: v for k, v in bar.items() if k != "file"} for bar in final_bars(str(out), "bars_ticks")]
        for rows, out in outs.items()
    }
    assert len(ticks["0"]) >= 26 and ticks["100000"] == ticks["0"]
    assert summary(outs["100000"])["reconciled"]


def test_replay_publishes_every_source(inputs, kafka_bootstrap, capsys):
    from io_connectors.avro_wire import SchemaStore, decode
    from tests.support.kafka import read_topic

    code = cli.main(
        [
            "replay",
            "--input",
            f"binance-aggtrades:{inputs}/binance/*.zip",
            "--input",
            f"coinbase-trades:{inputs}/coinbase/*.jsonl",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            "multi_source_replay",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    messages = read_topic(kafka_bootstrap, "multi_source_replay", 800 + 2 * 301)
    assert len(messages) == 800 + 2 * 301
    keys = {m.key().decode() for m in messages}
    assert keys == {"binance:BTCUSDT", "coinbase:BTC-USD"}
    store = SchemaStore.shipped()
    assert {decode(m.value(), "trade", store)["exchange"] for m in messages} == {"binance", "coinbase"}
    assert cli.main(["replay", "--input", f"{inputs}/binance/*.zip", "--kafka", kafka_bootstrap]) == 2
    assert "names no source" in capsys.readouterr().err
