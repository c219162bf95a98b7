"""--sink iceberg on a real pyiceberg SQL (SQLite) catalog: a chunked backfill's tables read back
with pyiceberg and duckdb equal its Parquet output, column for column; a re-run chunk leaves the
same rows; revisions, time travel, compaction and schema evolution; bad catalogs and tables are
one line and exit 2 before any pipeline runs."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines import cli
from io_connectors.bar_reader import final_bars, read_bars
from io_connectors.iceberg_tables import append, iceberg_schema, newest_revisions, open_catalog, partition_spec
from io_connectors.sinks.iceberg import IcebergTarget
from schemas import field_names
from tests.support.helpers import trades_to_parquet
from tests.support.paths import ROOT
from tests.support.streams import finish, new_topic, replay, start_stream

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SOURCE = "binance-aggtrades"
MALFORMED = "not,a,trade\n12,x,1,12,12,oops,true,true\n"
BARS_LATEST = ROOT / "docs" / "iceberg.md"


def micros(value):
    if not isinstance(value, datetime):
        return value
    return (value.replace(tzinfo=value.tzinfo or timezone.utc) - EPOCH) // timedelta(microseconds=1)


def plain(rows, schema: str) -> list[dict]:
    """Rows of a table as plain values, every field of its schema, sorted."""
    fields = field_names(schema)
    found = [{name: micros(row[name]) for name in fields} for row in rows]
    return sorted(found, key=lambda r: [(v is None, v) for v in r.values()])


def catalog_options(folder: Path) -> list[str]:
    return [
        "--sink",
        "iceberg",
        "--iceberg-catalog",
        f"sqlite:///{folder}/catalog.db",
        "--iceberg-warehouse",
        str(folder / "warehouse"),
    ]


def catalog_at(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    return open_catalog(IcebergTarget(f"sqlite:///{folder}/catalog.db", f"file://{folder}/warehouse"))


def backfill_options(inputs: Path, out: Path, *extra) -> list[str]:
    return [
        "backfill",
        "--input",
        f"{SOURCE}:{ROOT / 'data' / '*.zip'}",
        "--input",
        f"{SOURCE}:{inputs / '*.csv'}",
        "--bars",
        "time:1m",
        "--bars",
        "ticks:300",
        "--fill-gaps",
        "--chunk",
        "1d",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """One chunked backfill (two days, seam fill, time and tick bars, two dead letters) into Parquet and Iceberg."""
    folder = tmp_path_factory.mktemp("iceberg")
    inputs = folder / "inputs"
    inputs.mkdir()
    (inputs / "XRPETH-aggTrades-2019-10-11.csv").write_text(MALFORMED)
    out = folder / "out"
    assert cli.main(backfill_options(inputs, out, *catalog_options(folder))) == 0
    return folder, inputs, out


def iceberg_rows(folder: Path, table: str, snapshot_id=None) -> pa.Table:
    return catalog_at(folder).load_table(f"market.{table}").scan(snapshot_id=snapshot_id).to_arrow()


def test_every_table_reads_back_from_iceberg_as_in_parquet(backfilled):
    folder, _inputs, out = backfilled
    for table, schema in (("bars", "bar"), ("bars_ticks", "information_bar")):
        in_parquet = plain(read_bars(str(out), table=table).to_pylist(), schema)
        assert len(in_parquet) == {"bars": 2880, "bars_ticks": 38}[table]
        rows = iceberg_rows(folder, table)
        assert rows.column_names == field_names(schema)
        assert plain(rows.to_pylist(), schema) == in_parquet, table
        # duckdb, through Arrow, reads the same rows
        connection = duckdb.connect()
        catalog_at(folder).load_table(f"market.{table}").scan().to_duckdb("t", connection)
        cursor = connection.execute("SELECT * FROM t")
        names = [d[0] for d in cursor.description]
        assert plain([dict(zip(names, r)) for r in cursor.fetchall()], schema) == in_parquet, table
    dead = pq.read_table(out / "dead_letter").to_pylist()
    assert len(dead) == 2 and plain(iceberg_rows(folder, "dead_letters").to_pylist(), "dead_letter") == plain(
        dead, "dead_letter"
    )


def test_tables_are_partitioned_by_day_and_exchange_with_timestamps(backfilled):
    folder, _inputs, _out = backfilled
    table = catalog_at(folder).load_table("market.bars")
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == [
        ("window_start_day", "day"),
        ("exchange", "identity"),
    ]
    assert str(table.schema().find_field("window_start").field_type) == "timestamptz"
    days = {Path(task.file.file_path).parent.parent.name for task in table.scan().plan_files()}
    assert days == {"window_start_day=2019-10-11", "window_start_day=2019-10-12"}
    dead = catalog_at(folder).load_table("market.dead_letters")
    assert [f.name for f in dead.spec().fields] == ["dead_letter_time_day", "reason"]


def test_a_rerun_chunk_replaces_its_rows_without_duplicates(backfilled):
    folder, inputs, out = backfilled
    before = {
        t: plain(iceberg_rows(folder, t).to_pylist(), s)
        for t, s in (("bars", "bar"), ("bars_ticks", "information_bar"), ("dead_letters", "dead_letter"))
    }
    snapshots = len(catalog_at(folder).load_table("market.bars").snapshots())
    manifests = sorted((out / "_manifests").glob("*.json"))
    assert len(manifests) == 2
    manifests[0].unlink()  # the first day's chunk runs again (as after a crash); the second is reused
    assert cli.main(backfill_options(inputs, out, *catalog_options(folder))) == 0
    assert len(catalog_at(folder).load_table("market.bars").snapshots()) > snapshots, "the chunk committed again"
    for table, schema in (("bars", "bar"), ("bars_ticks", "information_bar"), ("dead_letters", "dead_letter")):
        again = plain(iceberg_rows(folder, table).to_pylist(), schema)
        if table == "dead_letters":  # dead-lettered again, at another time, as in the Parquet files
            assert again == plain(pq.read_table(out / "dead_letter").to_pylist(), schema)
            again, before[table] = ([{**r, "dead_letter_time": None} for r in rows] for rows in (again, before[table]))
        assert again == before[table], table


def write_trades_parquet(path: Path, per_symbol: int = 1200) -> None:
    """Normalized trades of two symbols over an hour of 2024-01-01, and one with a bad price."""
    start_us, span_us = 1_704_067_200_000_000, 3600 * 1_000_000
    rows = [
        {
            "exchange": "binance",
            "symbol": symbol,
            "trade_id": str(i),
            "price": 100 + i % 17 * 0.5,
            "amount": 0.5 + i % 7 / 10,
            "side": "buy" if i % 3 else "sell",
            "event_time": start_us + i * span_us // per_symbol,
        }
        for symbol in ("BTCUSDT", "ETHUSDT")
        for i in range(per_symbol)
    ]
    rows.append({**rows[5], "trade_id": "bad-price", "price": -1.0})
    trades_to_parquet(rows, path, row_group_size=500)


@pytest.mark.pipeline
def test_rerunning_one_time_slice_keeps_the_other_slices_of_the_same_symbol_and_day(tmp_path):
    """A Parquet file cut into time slices (--chunk-rows), written by two workers at once: every slice
    shares one (exchange, symbol, day), and a re-run slice replaces its own bars and nothing else."""
    path = tmp_path / "trades.parquet"
    write_trades_parquet(path)
    out = tmp_path / "out"
    options = [
        "backfill",
        "--source",
        "parquet",
        "--input",
        str(path),
        "--fill-gaps",
        "--chunk-rows",
        "3000",
        "--workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
        *catalog_options(tmp_path),
    ]
    assert cli.main(options) == 0
    manifests = sorted((out / "_manifests").glob("*.json"))
    assert len(manifests) >= 3, "the file was cut into time slices"
    expected = plain(read_bars(str(out)).to_pylist(), "bar")
    dead = plain(pq.read_table(out / "dead_letter").to_pylist(), "dead_letter")
    assert len(expected) == 2 * 60 and len(dead) == 1
    assert plain(iceberg_rows(tmp_path, "bars").to_pylist(), "bar") == expected
    manifests[1].unlink()
    assert cli.main(options) == 0
    assert plain(iceberg_rows(tmp_path, "bars").to_pylist(), "bar") == expected
    assert len(iceberg_rows(tmp_path, "dead_letters")) == 1


def pane(bar: dict, index: int, final: bool, close: float) -> dict:
    return {**bar, "pane_index": index, "is_final": final, "close": close, "pane_timing": "LATE" if final else "EARLY"}


BAR = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "interval": "1m",
    "window_start": 1_704_067_200_000_000,
    "window_end": 1_704_067_260_000_000,
    "open": 1.0,
    "high": 2.0,
    "low": 0.5,
    "close": 1.5,
    "volume": 3.0,
    "quote_volume": 4.5,
    "vwap": 1.5,
    "trade_count": 3,
    "buy_volume": 1.0,
    "sell_volume": 2.0,
    "first_trade_id": "1",
    "last_trade_id": "3",
    "duplicate_count": 0,
    "is_filled": False,
}


def latest_query() -> str:
    """The bars_latest query docs/iceberg.md gives for duckdb."""
    text = BARS_LATEST.read_text()
    start = text.index("```sql duckdb\n") + len("```sql duckdb\n")
    return text[start : text.index("```", start)]


def test_revisions_time_travel_the_latest_query_and_compaction(tmp_path, capsys):
    catalog = catalog_at(tmp_path)
    other = {**BAR, "symbol": "ETHUSDT"}
    first = append(catalog, "bars", [pane(BAR, 0, False, 1.25), pane(other, 0, True, 9.0)])
    second = append(catalog, "bars", [pane(BAR, 1, True, 1.5)])
    table = catalog.load_table("market.bars")
    assert [r["close"] for r in table.scan(snapshot_id=first).to_arrow().to_pylist() if r["symbol"] == "BTCUSDT"] == [
        1.25
    ]
    revisions = table.scan(snapshot_id=second).to_arrow()
    assert sorted(revisions.column("close").to_pylist()) == [1.25, 1.5, 9.0]

    connection = duckdb.connect()
    table.scan().to_duckdb("bars", connection)
    latest = connection.sql(latest_query()).to_arrow_table()
    assert sorted(latest.column("close").to_pylist()) == [1.5, 9.0]
    assert sorted(newest_revisions(revisions, "bars").column("close").to_pylist()) == [1.5, 9.0]

    assert cli.main(["iceberg", "compact", "--iceberg-catalog", f"sqlite:///{tmp_path}/catalog.db"]) == 0
    assert "market.bars: 3 rows -> 2" in capsys.readouterr().out
    table = catalog.load_table("market.bars")
    assert plain(table.scan().to_arrow().to_pylist(), "bar") == plain(latest.to_pylist(), "bar")
    assert table.scan(snapshot_id=second).to_arrow().num_rows == 3, "time travel still sees every revision"
    assert [s.snapshot_id for s in table.snapshots()][:2] == [first, second]


def test_a_table_evolves_to_a_schema_with_new_fields_and_old_snapshots_stay_readable(tmp_path):
    catalog = catalog_at(tmp_path)
    catalog.create_namespace("market")
    full = iceberg_schema("bar")
    from pyiceberg.schema import Schema

    reduced = Schema(*[f for f in full.fields if f.name not in ("vwap", "duplicate_count")])
    created = catalog.create_table("market.bars", schema=reduced, partition_spec=partition_spec(reduced, "bars"))
    old_row, older = pane(BAR, 0, True, 1.5), created.schema().as_arrow()
    created.append(pa.Table.from_pylist([{k: v for k, v in old_row.items() if k in older.names}], schema=older))
    old_snapshot = created.current_snapshot().snapshot_id

    new_row = pane({**BAR, "window_start": BAR["window_start"] + 60_000_000, "duplicate_count": 2}, 0, True, 1.75)
    append(catalog, "bars", [new_row])
    table = catalog.load_table("market.bars")
    assert [f.name for f in table.schema().fields][-2:] == ["vwap", "duplicate_count"]
    assert not table.schema().find_field("duplicate_count").required  # older rows have none
    old = table.scan(snapshot_id=old_snapshot).to_arrow()
    assert old.column_names == reduced.column_names and old.num_rows == 1 and old.column("close").to_pylist() == [1.5]
    now = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["window_start"])
    assert [(r["duplicate_count"], r["vwap"]) for r in now] == [(None, None), (2, 1.5)]


def run_with_error(capsys, *options) -> str:
    assert (
        cli.main(["backfill", "--source", SOURCE, "--input", str(ROOT / "data" / "*.zip"), "--no-progress", *options])
        == 2
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


def test_bad_catalogs_and_tables_are_one_line_and_exit_2_before_the_run(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run_with_error(capsys, "--out", out, "--iceberg-catalog", "sqlite:///x.db") == (
        "cryptobeam: error: --iceberg-catalog, --iceberg-warehouse and --iceberg-property go with --sink iceberg"
    )
    assert run_with_error(capsys, "--out", out, "--sink", "iceberg").startswith(
        "cryptobeam: error: --sink iceberg needs --iceberg-catalog URI"
    )
    assert run_with_error(capsys, "--out", out, *catalog_options(tmp_path), "--iceberg-property", "type").startswith(
        "cryptobeam: error: bad --iceberg-property 'type'"
    )

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "catalog.db").write_bytes(b"this is no SQLite database, not at all" * 100)
    assert run_with_error(capsys, "--out", out, *catalog_options(corrupt)) == (
        f"cryptobeam: error: cannot open Iceberg catalog sqlite:///{corrupt}/catalog.db: "
        "DatabaseError: (sqlite3.DatabaseError) file is not a database"
    )

    unreachable = run_with_error(capsys, "--out", out, "--sink", "iceberg", "--iceberg-catalog", "http://127.0.0.1:9")
    assert unreachable.startswith("cryptobeam: error: cannot open Iceberg catalog http://127.0.0.1:9: "), unreachable

    changed = tmp_path / "changed"
    catalog = catalog_at(changed)
    catalog.create_namespace("market")
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    schema = Schema(
        *[
            NestedField(f.field_id, f.name, StringType(), required=f.required) if f.name == "trade_count" else f
            for f in iceberg_schema("bar").fields
        ]
    )
    catalog.create_table("market.bars", schema=schema)
    assert run_with_error(capsys, "--out", out, *catalog_options(changed)) == (
        "cryptobeam: error: Iceberg table market.bars cannot take bar.avsc: "
        "field trade_count is string in the table, long in the schema"
    )
    assert not Path(out).exists() or not list(Path(out).rglob("*.parquet")), "no pipeline ran"
    with sqlite3.connect(changed / "catalog.db") as connection:  # and nothing was committed to the table
        assert connection.execute("SELECT count(*) FROM iceberg_tables").fetchone()[0] == 1
    assert len(catalog.load_table("market.bars").snapshots()) == 0
    shutil.rmtree(changed)


PANE_FIELDS = ("pane_timing", "pane_index", "is_final")


def test_a_stream_into_iceberg_commits_per_flush_and_its_latest_bars_equal_the_backfill(
    backfilled, kafka_bootstrap, tmp_path
):
    """Replay -> Kafka -> stream on Prism with --sink iceberg: the newest revision of each bar in
    market.bars equals the backfill's final bars; commits are per flush (far fewer than bars), and
    offsets were committed (after the Iceberg commits they wait on)."""
    _folder, _inputs, backfill_out = backfilled
    topic = new_topic(kafka_bootstrap, 1)
    replay(kafka_bootstrap, topic)
    out = tmp_path / "stream"
    options = ("--fill-gaps", "--allowed-lateness", "10m", *catalog_options(tmp_path), "--stop-when-idle", "4s")
    finish(start_stream(kafka_bootstrap, topic, out, *options), out, timeout=300)
    table = catalog_at(tmp_path).load_table("market.bars")
    revisions = table.scan().to_arrow()
    assert plain(revisions.to_pylist(), "bar") == plain(read_bars(str(out)).to_pylist(), "bar"), (
        "every pane, as in Parquet"
    )
    latest = newest_revisions(revisions, "bars").to_pylist()

    def without_panes(rows):
        return [{k: v for k, v in row.items() if k not in PANE_FIELDS} for row in plain(rows, "bar")]

    assert without_panes(latest) == without_panes(final_bars(str(backfill_out))) and len(latest) == 2880
    commits = len(table.snapshots())
    assert 1 <= commits < revisions.num_rows / 10, f"{commits} commits for {revisions.num_rows} rows"
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and summary["kafka_offset_commits"] > 0
