"""A careless user and a faulty machine against the output directory: long names, concurrent
runs, moved and damaged outputs, --overwrite beside user files, a full disk, odd options."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from io_connectors.bar_reader import final_bars, read_bars
from tests.support.commands import cryptobeam, run_backfill
from tests.support.outputs import summary
from tests.support.paths import BUNDLED, ROOT

T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def tardis_file(path: Path, rows: list[tuple[str, str]], per_pair: int = 3) -> Path:
    """Tardis trades: ``per_pair`` trades a minute apart for each (exchange, symbol)."""
    lines = [
        f"{exchange},{symbol},{T0_US + i * 60_000_000},{T0_US + i * 60_000_000},{n}-{i},buy,{1 + i},2"
        for n, (exchange, symbol) in enumerate(rows)
        for i in range(per_pair)
    ]
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def backfill(inputs: str, out: Path, *extra):
    return run_backfill("tardis-trades", inputs, out, *extra)


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cryptobeam: error:"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def chunked_bundled_backfill(out: Path, *extra):
    """A backfill of the bundled data in two chunks, one a day."""
    return run_backfill("binance-aggtrades", BUNDLED, out, "--chunk", "1d", *extra)


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    """A two-chunk backfill of the bundled data, to copy and damage."""
    out = tmp_path_factory.mktemp("bundled") / "out"
    result = chunked_bundled_backfill(out)
    assert result.returncode == 0, result.stderr
    return out


def copy_of(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def validate(out: Path, cwd=ROOT):
    return cryptobeam("validate", str(out), cwd=cwd)


# Item 5: names longer than a path segment may be.


@pytest.mark.pipeline
def test_long_symbols_and_exchanges_are_stored_whole_with_segments_within_255_bytes(tmp_path):
    pairs = [
        ("binance", "S" * 300),
        ("binance", "€" * 60),
        ("x" * 250, "BTCUSDT"),
        ("binance", "BTCUSDT"),
        ("binance", "S" * 299 + "T"),
    ]  # shares the first ~240 characters with the first: its own partition
    out = tmp_path / "out"
    result = backfill(str(tardis_file(tmp_path / "trades.csv", pairs)), out)
    assert result.returncode == 0, result.stderr
    assert summary(out)["reconciled"] and summary(out)["trades_in_final_bars"] == 3 * len(pairs)
    for path in out.rglob("*"):
        assert len(path.name.encode()) <= 255, path.name
    bars = final_bars(str(out))
    assert sorted({(b["exchange"], b["symbol"]) for b in bars}) == sorted(pairs)
    assert all(b["trade_count"] == 1 for b in bars) and len(bars) == 3 * len(pairs)
    assert validate(out).returncode == 0


def test_over_long_symbol_and_exchange_options_are_user_errors(tmp_path):
    inputs = str(tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT")]))
    for flag in ("--symbol", "--exchange"):
        result = backfill(inputs, tmp_path / "out", flag, "Y" * 300)
        assert result.returncode == 2
        assert flag in one_line_error(result)


# Item 6: one run at a time per output directory.


def test_a_second_run_into_a_locked_output_is_refused_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    someone_elses = out / "bars" / ".part-x.parquet.0123.tmp"
    someone_elses.parent.mkdir()
    someone_elses.write_bytes(b"being written")
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = backfill(str(tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT")])), out, "--overwrite")
    assert result.returncode == 2
    assert "another cryptobeam run" in one_line_error(result)
    assert someone_elses.exists() and not (out / "_SUMMARY.json").exists()


def test_a_stream_into_a_locked_output_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cryptobeam("stream", "--kafka", "127.0.0.1:9", "--out", str(out), "--stop-when-idle", "1s")
    assert result.returncode == 2
    assert "another cryptobeam run" in one_line_error(result)


# Items 8, 12, 13: validate anywhere, damaged manifests and files.


def test_validate_works_from_any_directory_and_checks_the_copy_it_is_given(bundled_run, tmp_path):
    assert validate(bundled_run, cwd=tmp_path).returncode == 0
    copy = copy_of(bundled_run, tmp_path)
    assert validate(copy, cwd=tmp_path).returncode == 0
    bar_file = sorted((copy / "bars").rglob("part-*.parquet"))[0]
    table = pq.read_table(bar_file, partitioning=None)
    doubled = table.set_column(
        table.schema.get_field_index("trade_count"), "trade_count", pa.compute.multiply(table.column("trade_count"), 2)
    )
    pq.write_table(doubled, bar_file)
    result = validate(copy, cwd=tmp_path)
    assert result.returncode == 1 and "changed" in result.stdout


@pytest.mark.parametrize("damage", ["", "{", '{"chunk_id": "2019-10-11", "settings": {}, "surprise": 1}'])
def test_a_damaged_manifest_is_redone_by_backfill_and_reported_by_validate(bundled_run, tmp_path, damage):
    copy = copy_of(bundled_run, tmp_path)
    (copy / "_manifests" / "2019-10-11.json").write_text(damage)
    result = validate(copy)
    assert result.returncode == 1 and "manifest is damaged" in result.stdout and "Traceback" not in result.stderr
    rerun = chunked_bundled_backfill(copy)
    assert rerun.returncode == 0, rerun.stderr
    assert summary(copy)["chunks_run"] == 1 and summary(copy)["reconciled"]
    assert validate(copy).returncode == 0
    (copy / "_manifests" / "2019-10-11.json").write_text(damage)
    overwrite = chunked_bundled_backfill(copy, "--overwrite")
    assert overwrite.returncode == 0, overwrite.stderr
    assert summary(copy)["chunks_run"] == 2 and validate(copy).returncode == 0


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_validate_reports_damaged_bar_files(bundled_run, tmp_path, damage):
    copy = copy_of(bundled_run, tmp_path)
    bar_file = sorted((copy / "bars").rglob("part-*.parquet"))[0]
    data = bar_file.read_bytes()
    bar_file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[damage])
    result = validate(copy)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot be read" in result.stdout and "changed" in result.stdout


def test_validate_reports_bars_whose_manifest_was_deleted(bundled_run, tmp_path):
    copy = copy_of(bundled_run, tmp_path)
    (copy / "_manifests" / "2019-10-12.json").unlink()
    result = validate(copy)
    assert result.returncode == 1 and "recorded by no manifest" in result.stdout


# Item 14 and a rough edge: inputs inside the output; --overwrite beside user files.


def test_an_output_directory_holding_the_inputs_is_refused(tmp_path):
    inputs = tmp_path / "X" / "bars"
    inputs.mkdir(parents=True)
    tardis_file(inputs / "trades.csv", [("binance", "BTCUSDT")])
    for args in (
        (str(inputs / "*.csv"), tmp_path / "X", "--overwrite"),
        (str(tmp_path / "X" / "*" / "*"), tmp_path / "X"),
    ):
        result = backfill(*args)
        assert result.returncode == 2 and "inside the output directory" in one_line_error(result)
    assert (inputs / "trades.csv").exists()


@pytest.mark.pipeline
def test_overwrite_removes_only_what_earlier_runs_wrote(tmp_path):
    out = tmp_path / "out"
    inputs = str(tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT"), ("binance", "ETHUSDT")]))
    assert backfill(inputs, out).returncode == 0
    kept = [out / "notes.txt", out / "bars" / "README", out / "bars" / "exchange=binance" / "mine.parquet"]
    for path in kept:
        path.write_text("the user's")
    result = backfill(inputs, out, "--interval", "5m", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert all(path.read_text() == "the user's" for path in kept)
    unreadable: list = []
    intervals = {b["interval"] for b in read_bars(str(out), unreadable).to_pylist()}
    assert intervals == {"5m"}
    assert sorted(Path(path).name for path, _why in unreadable) == ["README", "mine.parquet"]


def test_overwrite_never_follows_a_manifest_out_of_the_output_directory(bundled_run, tmp_path):
    copy = copy_of(bundled_run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("not the run's")
    manifest_path = copy / "_manifests" / "2019-10-11.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["outputs"].append({"path": "../victim.txt", "size": 13, "sha256": "0" * 64})
    manifest_path.write_text(json.dumps(manifest))
    typed_wrong = dict(manifest, outputs=[{"path": 5, "size": "big", "sha256": None}])
    (copy / "_manifests" / "2019-10-12.json").write_text(json.dumps(dict(typed_wrong, chunk_id="2019-10-12")))
    assert "manifest is damaged" in validate(copy).stdout
    result = chunked_bundled_backfill(copy, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "not the run's" and validate(copy).returncode == 0


# Item 17: a full disk.


@pytest.mark.pipeline
def test_a_full_disk_is_one_line_and_exit_3(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI and the dev machines run as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        (disk / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))
        inputs = str(tardis_file(tmp_path / "trades.csv", [("binance", f"SYM{i}") for i in range(40)], per_pair=30))
        result = backfill(inputs, disk / "out")
        assert result.returncode == 3, result.stdout + result.stderr
        assert "space" in one_line_error(result).lower()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# Rough edges: --workers, a stale error log, Beam's own error logs.


@pytest.mark.pipeline
def test_workers_must_be_positive_and_are_capped_at_the_cores(tmp_path):
    inputs = str(tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT")]))
    zero = backfill(inputs, tmp_path / "out", "--workers", "0")
    assert zero.returncode == 2 and "--workers" in one_line_error(zero)
    many = backfill(inputs, tmp_path / "out", "--workers", "100")
    assert many.returncode == 0, many.stderr
    assert f"running {os.cpu_count()}" in many.stdout


@pytest.mark.pipeline
def test_the_line_limit_is_an_option(tmp_path):
    path = tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT")])
    path.write_text(path.read_text() + "binance,BTCUSDT," + "9" * 200 + "\n")
    assert backfill(str(path), tmp_path / "bad", "--max-line-bytes", "0").returncode == 2
    result = backfill(str(path), tmp_path / "out", "--max-line-bytes", "100")
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path / "out")["dead_letters_by_reason"] == {"malformed": 1}
    assert summary(tmp_path / "out")["trades_in_final_bars"] == 3


def test_a_resumed_run_removes_the_earlier_error_log(bundled_run, tmp_path):
    copy = copy_of(bundled_run, tmp_path)
    (copy / "_ERROR.log").write_text("Traceback: an earlier attempt failed")
    (copy / "_manifests" / "2019-10-12.json").unlink()
    result = chunked_bundled_backfill(copy)
    assert result.returncode == 0, result.stderr
    assert not (copy / "_ERROR.log").exists()


@pytest.mark.pipeline
def test_a_failing_step_prints_one_line_and_no_beam_log(tmp_path):
    """A step that raises: Beam's runner logs it at ERROR; the terminal shows only the command's line."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys, apache_beam as beam\n"
        "from beam_pipelines import backfill, cli\n"
        "def explode(pipeline, config):\n"
        "    pipeline | beam.Create([1]) | beam.Map(lambda x: 1 / 0)\n"
        "backfill.build_backfill = explode\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    inputs = str(tardis_file(tmp_path / "trades.csv", [("binance", "BTCUSDT")]))
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "backfill",
            "--source",
            "tardis-trades",
            "--input",
            inputs,
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3
    assert "ZeroDivisionError" in one_line_error(result)
    log = (tmp_path / "out" / "_ERROR.log").read_text()
    assert "ZeroDivisionError" in log and "Traceback" in log
