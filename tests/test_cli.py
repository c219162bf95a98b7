"""End to end through the installed ``cryptobeam`` command, on the bundled data set."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from io_connectors.output_lock import LOCK_NAME
from tests.support.commands import cryptobeam, run_backfill
from tests.support.paths import ROOT


@pytest.mark.pipeline
def test_backfill_bundled_data_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = cryptobeam(
        "backfill",
        "--source",
        "binance-aggtrades",
        "--input",
        "data/XRPETH-aggTrades-*.zip",
        "--interval",
        "1m",
        "--fill-gaps",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "reconciled" in result.stdout and "records read" in result.stdout
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and summary["problems"] == []

    # Independent check: read the zips with duckdb and compare totals and every real bar's OHLCV.
    lines = []
    for path in sorted((ROOT / "data").glob("XRPETH-aggTrades-*.zip")):
        with zipfile.ZipFile(path) as z:
            lines += z.read(z.namelist()[0]).decode().splitlines()
    csv = tmp_path / "all.csv"
    csv.write_text("\n".join(lines) + "\n")
    reference = duckdb.sql(f"""
        SELECT (column5 // 60000) * 60000 AS start_ms, arg_min(column1, (column5, column0)) AS open,
               max(column1) AS high, min(column1) AS low, arg_max(column1, (column5, column0)) AS close,
               sum(column2) AS volume, count(*) AS n
        FROM read_csv('{csv}', header=false, columns={{'column0':'BIGINT','column1':'DOUBLE','column2':'DOUBLE',
             'column3':'BIGINT','column4':'BIGINT','column5':'BIGINT','column6':'BOOLEAN','column7':'BOOLEAN'}})
        GROUP BY ALL ORDER BY 1""").fetchall()
    bars = pq.read_table(out / "bars").to_pylist()
    real = sorted((b for b in bars if not b["is_filled"]), key=lambda b: b["window_start"])
    assert summary["records_in"] == len(lines) == sum(b["trade_count"] for b in real)
    assert len(real) == len(reference)
    for bar, (start_ms, o, h, lo, c, volume, n) in zip(real, reference):
        assert int(bar["window_start"].timestamp() * 1000) == start_ms
        assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["trade_count"]) == (o, h, lo, c, n)
        assert bar["volume"] == pytest.approx(volume, rel=1e-12)
    # Gap fill: from the first to the last bar every minute is present exactly once.
    starts = sorted(b["window_start"] for b in bars)
    assert len(set(starts)) == len(starts)
    assert (starts[-1] - starts[0]).total_seconds() / 60 + 1 == len(starts)
    # Hive layout, zstd, and no temporary file left behind (the run's lock file stays, unlocked).
    files = list((out / "bars").rglob("*"))
    assert any(
        "exchange=binance" in str(f) and "symbol=XRPETH" in str(f) and "date=2019-10-11" in str(f) for f in files
    )
    assert [f.name for f in out.rglob(".*") if f.is_file()] == [LOCK_NAME]
    parquet_file = next(f for f in files if f.suffix == ".parquet")
    assert pq.ParquetFile(parquet_file).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.pipeline
def test_dead_letters_and_duplicates_reconcile(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    good = "1,0.5,1,1,1,1570752000565,True,True\n2,0.6,2,2,2,1570752001565,False,True\n"
    (data / "ETHBTC-aggTrades-2019-10-11.csv").write_text(good + "3,oops,1,1,1,1570752002565,True,True\n")
    (data / "ETHBTC-aggTrades-2019-10-11-copy.csv").write_text(good)  # the same trades again
    out = tmp_path / "out"
    result = run_backfill("binance-aggtrades", data / "*.csv", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert (
        summary["records_in"],
        summary["trades_in_final_bars"],
        summary["dead_letter_rows_written"],
        summary["duplicates"],
    ) == (5, 2, 1, 2)
    dead = pq.read_table(out / "dead_letter").to_pylist()
    assert dead[0]["payload_string"] == "3,oops,1,1,1,1570752002565,True,True" and dead[0]["source_offset"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "binance-aggtrades", "--input", "nothing/here-*.zip"], "no input files matched"),
        (["--source", "binance-aggtrades", "--input", "data/*.zip", "--interval", "7x"], "bad interval"),
        (["--source", "binance-aggtrades", "--input", "data/*.zip", "--interval", "1M"], "bad interval"),
        (["--source", "nasdaq-itch", "--input", "data/*.zip"], "unknown source"),
        (["--source", "binance-aggtrades", "--input", "data/*.zip", "--allowed-lateness", "soon"], "bad duration"),
        (["--source", "binance-aggtrades", "--input", "data/*.zip", "--runner", "warp"], "unknown runner"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, message):
    result = cryptobeam("backfill", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_replay_refuses_files_of_records_other_than_trades(tmp_path):
    transfers = tmp_path / "token_transfers.csv"
    transfers.write_text("token_address,from_address,to_address,value,transaction_hash,log_index,block_number\n")
    result = cryptobeam(
        "replay", "--input", f"ethereum-etl-token-transfers:{transfers}", "--kafka", "127.0.0.1:9", "--topic", "t"
    )
    assert result.returncode == 2 and "replay publishes trades" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_run_with_block_files_refuses_chunk(tmp_path):
    (tmp_path / "blocks.csv").write_text("number,hash,parent_hash,timestamp\n")
    (tmp_path / "transfers.csv").write_text("token_address,from_address,to_address,value\n")
    result = cryptobeam(
        "backfill",
        "--input", f"ethereum-etl-blocks:{tmp_path / 'blocks.csv'}",
        "--input", f"ethereum-etl-token-transfers:{tmp_path / 'transfers.csv'}",
        "--bars", "chain:1m", "--chunk", "1d", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2 and "leave out --chunk" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unwritable_output_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cryptobeam(
        "backfill", "--source", "binance-aggtrades", "--input", "data/*.zip", "--out", str(blocker / "out")
    )
    assert result.returncode == 2 and "not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sources_lists_formats():
    result = cryptobeam("sources")
    assert result.returncode == 0 and "binance-aggtrades" in result.stdout and "kraken-trades" in result.stdout


def test_the_command_line_starts_light():
    """A local backfill starts its workers' fork server once the arguments are parsed, so every
    module the command line imports first delays the workers (rich and asyncio cost 60 ms)."""
    probe = (
        "import sys, beam_pipelines.cli; "
        "print(sorted(m for m in ('rich', 'asyncio', 'apache_beam', 'pyarrow', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_early_firings_are_rejected_for_a_backfill(tmp_path):
    result = run_backfill("binance-aggtrades", "data/*.zip", tmp_path / "out", "--early", "5s")
    assert result.returncode == 2 and "--early" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.pipeline
def test_allowed_lateness_in_a_backfill_still_reconciles(tmp_path):
    result = run_backfill("binance-aggtrades", "data/*.zip", tmp_path / "out", "--allowed-lateness", "10m")
    assert result.returncode == 0, result.stdout + result.stderr
    bars = pq.read_table(tmp_path / "out" / "bars").to_pylist()
    assert all(b["is_final"] and b["pane_timing"] == "ON_TIME" for b in bars)


def test_local_inputs_match_as_pythons_glob_does(tmp_path):
    """Local patterns are matched without Beam (the command plans before Beam is imported)."""
    from io_connectors.files import match_inputs

    (tmp_path / "day" / "sub").mkdir(parents=True)
    for name in ("day/a.csv", "day/.b.csv", "day/sub/c.csv", "day/sub/d.txt"):
        (tmp_path / name).write_text("x")

    def match(pattern):
        return [Path(f.path).relative_to(tmp_path).as_posix() for f in match_inputs([f"{tmp_path}/{pattern}"])]

    assert match("day/*.csv") == ["day/.b.csv", "day/a.csv"]  # hidden files too, as Beam's FileSystems
    assert match("day/") == ["day/.b.csv", "day/a.csv"]  # a directory's files, not its subdirectories
    assert match("**/*.csv") == ["day/.b.csv", "day/a.csv", "day/sub/c.csv"]
    assert match("day/sub/c.csv") == ["day/sub/c.csv"]
    assert [f.size for f in match_inputs([f"{tmp_path}/day/a.csv"])] == [1]


@pytest.mark.pipeline
def test_unreadable_files_are_dead_letters_and_directories_are_not_inputs(tmp_path):
    data = tmp_path / "in"
    (data / "a-directory.zip").mkdir(parents=True)
    (data / "ETHBTC-aggTrades-2019-10-11.zip").write_bytes(b"this is not a zip archive")
    (data / "ETHBTC-aggTrades-2019-10-12.csv").write_text("1,0.5,1,1,1,1570838400565,True,True\n")
    out = tmp_path / "out"
    result = run_backfill("binance-aggtrades", data / "*", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert (summary["records_in"], summary["trades_in_final_bars"], summary["dead_letters_by_reason"]) == (
        2,
        1,
        {"unreadable_file": 1},
    )


@pytest.mark.pipeline
def test_a_rerun_reuses_complete_output(tmp_path):
    out = tmp_path / "out"
    args = ("backfill", "--source", "binance-aggtrades", "--input", "data/*.zip", "--out", str(out), "--no-progress")
    assert cryptobeam(*args).returncode == 0
    assert cryptobeam(*args).returncode == 0
    assert json.loads((out / "_SUMMARY.json").read_text())["chunks_skipped"] == 1
    assert cryptobeam(*args, "--interval", "5m").returncode == 2
    assert cryptobeam(*args, "--interval", "5m", "--overwrite").returncode == 0


@pytest.mark.pipeline
def test_a_failing_pipeline_prints_one_line_and_keeps_the_traceback(tmp_path, monkeypatch):
    import apache_beam as beam

    from beam_pipelines import backfill, cli

    def explode(pipeline, config):
        pipeline | beam.Create([1]) | beam.Map(lambda x: 1 / 0)

    monkeypatch.setattr(backfill, "build_backfill", explode)
    out = tmp_path / "out"
    code = cli.main(
        [
            "backfill",
            "--source",
            "binance-aggtrades",
            "--input",
            str(ROOT / "data" / "*.zip"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 3
    assert "ZeroDivisionError" in (out / "_ERROR.log").read_text()
