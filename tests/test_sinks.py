"""Sinks as plug-ins (io_connectors.sinks): every sink of a run gets the same bars, seam fills
included; a sink added to the registry is offered, checked, recorded and fed like the built-in
ones; the command line lists and checks sinks without importing Beam or a sink's client."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest

from io_connectors.avro_wire import SchemaStore, decode
from io_connectors.bar_reader import read_bars
from io_connectors.sinks import SINKS, Sink, SinkWrites
from io_connectors.sinks.bigquery import BigQueryTarget
from schemas import field_names
from tests.support.backfills import backfill, write_days
from tests.support.commands import cryptobeam, every_sink, run_backfill
from tests.support.helpers import (
    COLLECTED,
    CONSOLIDATED_BESIDE_TIME_BARS,
    Collect,
    three_venue_trades,
    write_three_venue_inputs,
)
from tests.support.kafka import read_topic
from tests.support.paths import BUNDLED, ROOT

BAR_FIELDS = field_names("bar")
KEY = ("exchange", "symbol", "window_start", "is_filled", "pane_index")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(value):
    """A timestamp as the bar records hold it: microseconds since the epoch (readers return datetimes)."""
    if not isinstance(value, datetime):
        return value
    return (value.replace(tzinfo=value.tzinfo or timezone.utc) - EPOCH) // timedelta(microseconds=1)


def comparable(rows) -> list[dict]:
    """Bars as every sink's reader returns them, reduced to plain values and sorted."""
    plain = [{k: micros(v) for k, v in row.items() if k in BAR_FIELDS} for row in rows]
    return sorted(plain, key=lambda b: [b[k] for k in KEY])


def parquet_bars(out: Path) -> list[dict]:
    return comparable(pq.read_table(out / "bars").to_pylist())


def avro_bars(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "bars_avro").rglob("*.avro")):
        with open(path, "rb") as handle:
            rows += list(fastavro.reader(handle))
    return comparable(rows)


def test_every_sink_gets_the_seam_fills_of_a_chunked_backfill(tmp_path, bigquery_endpoint, kafka_bootstrap):
    days = tmp_path / "days"
    write_days(days, 2, per_day=30, seed=8)  # sparse trades: the midnight lies in an interval neither chunk can fill
    out = tmp_path / "out"
    target = BigQueryTarget("local.cryptobeam.seams", bigquery_endpoint)
    result = backfill(
        days,
        out,
        "--interval",
        "5m",
        "--chunk",
        "1d",
        *every_sink(bigquery_endpoint, target.table, kafka_bootstrap, "seam_bars"),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    in_parquet = parquet_bars(out)
    starts = [bar["window_start"] for bar in in_parquet]
    assert starts == list(range(starts[0], starts[-1] + 1, 300_000_000))  # every interval once, real or filled
    assert sum(pq.read_metadata(p).num_rows for p in (out / "bars").rglob("part-seams.parquet")) > 0
    assert list((out / "bars_avro").rglob("part-seams.avro"))
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and summary["bar_rows_written"] == len(in_parquet)

    assert avro_bars(out) == in_parquet
    rows = [dict(row.items()) for row in target.client().query(f"SELECT * FROM `{target.table}`").result()]
    assert comparable(rows) == in_parquet
    store = SchemaStore.shipped()
    messages = read_topic(kafka_bootstrap, "seam_bars", len(in_parquet))
    assert comparable(decode(m.value(), "bar", store) for m in messages) == in_parquet


class _CollectingSink(Sink):
    """A sink added by a test: one class and one registry entry, nothing else."""

    name = "collect"
    description = "bars into this process's memory (tests only)"

    def add_options(self, command, streaming):
        command.add_argument("--collect-into", default=None)

    def target_from_args(self, args, chosen, streaming):
        if chosen and not args.collect_into:
            from io_connectors.sinks import SinkOptionError

            raise SinkOptionError("--sink collect needs --collect-into NAME")
        return args.collect_into if chosen else None

    def settings(self, target):
        return {"collect_into": target} if target else {}

    def write(self, bars, target):
        import apache_beam as beam

        bars.bars | "WriteBarsCollect" >> beam.Map(Collect(target))
        return SinkWrites()


@pytest.mark.pipeline
def test_a_sink_added_to_the_registry_is_offered_checked_recorded_and_fed(tmp_path, monkeypatch, capsys):
    from beam_pipelines import cli

    monkeypatch.setitem(SINKS, "collect", _CollectingSink())
    bundled = ["backfill", "--source", "binance-aggtrades", "--input", BUNDLED, "--no-progress"]

    assert cli.main([*bundled, "--out", str(tmp_path / "bad"), "--sink", "collect"]) == 2
    assert capsys.readouterr().err.strip() == "cryptobeam: error: --sink collect needs --collect-into NAME"

    out = tmp_path / "out"
    code = cli.main([*bundled, "--out", str(out), "--fill-gaps", "--sink", "collect", "--collect-into", "plugged"])
    assert code == 0, capsys.readouterr()
    assert comparable(COLLECTED["plugged"]) == parquet_bars(out) and len(COLLECTED["plugged"]) == 2880
    [manifest] = (out / "_manifests").glob("*.json")
    settings = json.loads(manifest.read_text())["settings"]
    assert settings["sinks"] == ["collect", "parquet"] and settings["collect_into"] == "plugged"
    cli.main(["sinks"])
    assert "collect" in capsys.readouterr().out


def test_manifests_record_sinks_as_before_the_registry_so_earlier_runs_resume():
    """A chunk written before the registry is reused only if today's settings equal its recorded ones."""
    from beam_pipelines.cli import build_parser
    from io_connectors.sinks import recorded_settings, sink_targets

    def recorded(*options):
        args = build_parser().parse_args(
            ["backfill", "--source", "binance-aggtrades", "--input", "x", "--out", "o", *options]
        )
        return recorded_settings(sink_targets(args, streaming=False))

    assert recorded() == {"sinks": ["parquet"], "bigquery_table": None, "kafka_bars_topic": None}
    assert recorded(
        "--sink",
        "kafka",
        "--kafka",
        "h:1",
        "--kafka-bars-topic",
        "t",
        "--sink",
        "avro",
        "--sink",
        "bigquery",
        "--bq-table",
        "p.d.t",
        "--sink",
        "parquet",
    ) == {"sinks": ["avro", "bigquery", "kafka", "parquet"], "bigquery_table": "p.d.t", "kafka_bars_topic": "t"}


CHECK_SINKS_WITHOUT_BEAM = """
import sys
from beam_pipelines.cli import build_parser
from beam_pipelines.cli_common import UserError, sink_targets_from_args
def targets(*options):
    args = build_parser().parse_args(
        ["backfill", "--source", "binance-aggtrades", "--input", "x", "--out", "o", *options]
    )
    try:
        return [name for name, _ in sink_targets_from_args(args, streaming=False)]
    except UserError as error:
        return str(error)
print(targets("--sink", "bigquery", "--bq-table", "p.d.t", "--sink", "avro"))
print(targets("--sink", "bigtable"))
print(targets("--bq-table", "p.d.t"))
print(targets("--sink", "bigquery", "--bq-table", "nodots"))
print(targets("--sink", "kafka"))
stream = build_parser().parse_args(["stream", "--kafka", "h:1", "--out", "o", "--bars-topic", "b"])
print([(name, getattr(target, "topic", None)) for name, target in sink_targets_from_args(stream, streaming=True)])
heavy_modules = ("apache_beam", "google.cloud.bigquery", "confluent_kafka", "pyarrow")
print(sorted(m for m in sys.modules if m.startswith(heavy_modules)))
"""


def test_sinks_are_offered_and_checked_without_importing_beam_or_a_client():
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SINKS_WITHOUT_BEAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['parquet', 'avro', 'bigquery']",
        "unknown --sink 'bigtable'; available: parquet, avro, bigquery, kafka, iceberg",
        "--bq-table and --bq-endpoint go with --sink bigquery",
        "bad BigQuery table 'nodots': use project.dataset.table",
        "--sink kafka and --kafka HOST:PORT go together",
        "[('parquet', None), ('kafka', 'b')]",
        "[]",
    ]


def test_a_bad_sink_option_is_one_line_and_exit_2(tmp_path):
    result = run_backfill("binance-aggtrades", BUNDLED, tmp_path / "out", "--sink", "bigquery")
    assert (
        result.returncode == 2
        and result.stderr == "cryptobeam: error: --sink bigquery needs --bq-table project.dataset.table\n"
    )


INFORMATION_FIELDS = field_names("information_bar")


def information_rows(rows) -> list[dict]:
    plain = [{k: micros(v) for k, v in row.items() if k in INFORMATION_FIELDS} for row in rows]
    return sorted(plain, key=lambda b: (b["symbol"], b["day"], b["ordinal"], b["pane_index"]))


def test_every_sink_gets_each_table_of_bars(tmp_path, bigquery_endpoint, kafka_bootstrap):
    """Information bars beside time bars: each table to each sink, under its own name (a BigQuery
    table and its latest view, a Kafka topic), with its own schema."""
    out = tmp_path / "out"
    target = BigQueryTarget("local.cryptobeam.tables", bigquery_endpoint)
    result = run_backfill(
        "binance-aggtrades",
        BUNDLED,
        out,
        "--bars",
        "time:1h",
        "--bars",
        "ticks:300",
        *every_sink(bigquery_endpoint, target.table, kafka_bootstrap, "tables"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    in_parquet = information_rows(pq.read_table(out / "bars_ticks").to_pylist())
    assert len(in_parquet) > 30 and {b["interval"] for b in in_parquet} == {"ticks:300"}
    avro_rows = []
    for path in sorted((out / "bars_ticks_avro").rglob("*.avro")):
        with open(path, "rb") as handle:
            avro_rows += list(fastavro.reader(handle))
    assert information_rows(avro_rows) == in_parquet
    client = target.client()
    assert [f.name for f in client.get_table(f"{target.table}_ticks").schema] == list(INFORMATION_FIELDS)
    assert (
        information_rows(dict(r.items()) for r in client.query(f"SELECT * FROM `{target.table}_ticks`").result())
        == in_parquet
    )
    latest = list(client.query(f"SELECT * FROM `{target.table}_ticks_latest`").result())
    assert len(latest) == len({(b["day"], b["ordinal"]) for b in in_parquet})
    assert comparable(
        dict(r.items()) for r in client.query(f"SELECT * FROM `{target.table}`").result()
    ) == parquet_bars(out)
    messages = read_topic(kafka_bootstrap, "tables_ticks", len(in_parquet))
    assert information_rows(decode(m.value(), "information_bar", SchemaStore.shipped()) for m in messages) == in_parquet
    assert len(read_topic(kafka_bootstrap, "tables", len(parquet_bars(out)))) == len(parquet_bars(out))


VENUES_START = datetime(2024, 1, 1, 23, 50, tzinfo=timezone.utc)
VENUES_SECONDS = 20 * 60
MICROS_PER_DAY = 86_400_000_000
KRAKEN_DRIFT = (datetime(2024, 1, 1, 23, 56, tzinfo=timezone.utc), datetime(2024, 1, 2, 0, 1, tzinfo=timezone.utc))


def _venue_trades(seed: int) -> dict[str, list[tuple[datetime, float, float]]]:
    """(time, price, amount) per venue, a trade every few seconds across a UTC midnight; Kraken 5 %
    high for a while, so quality rows hold exclusions and consolidated bars their excluded venue."""
    return three_venue_trades(
        seed, VENUES_START, VENUES_SECONDS, KRAKEN_DRIFT, steps=(2.0, 4.5, 6.0, 9.25), amounts=(0.01, 0.25, 1.5)
    )


_write_venue_inputs = write_three_venue_inputs


def table_rows(rows, schema: str) -> list[dict]:
    """Rows of one table as every sink's reader returns them, reduced to its schema's fields and sorted
    by what names a row across its panes."""
    fields = field_names(schema)
    plain = [{k: micros(v) for k, v in row.items() if k in fields} for row in rows]
    return sorted(plain, key=lambda r: (r["exchange"], r["symbol"], r["interval"], r["window_start"], r["pane_index"]))


def test_every_sink_gets_the_consolidated_bars_and_the_quality_table(tmp_path, bigquery_endpoint, kafka_bootstrap):
    """Consolidated bars beside time bars, three venues: ``bars_consolidated`` and ``quality`` reach
    Parquet, Avro, BigQuery (a table and its latest view each) and Kafka (a topic each), each with its
    own schema, the same rows everywhere."""
    venues = _venue_trades(seed=11)
    inputs = _write_venue_inputs(tmp_path / "venues", venues)
    out = tmp_path / "out"
    target = BigQueryTarget("local.cryptobeam.venues", bigquery_endpoint)
    result = cryptobeam(
        "backfill",
        *inputs,
        *CONSOLIDATED_BESIDE_TIME_BARS,
        *every_sink(bigquery_endpoint, target.table, kafka_bootstrap, "venues"),
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and not (out / "dead_letter").exists()
    client, store = target.client(), SchemaStore.shipped()

    for table, schema, suffix in (
        ("bars_consolidated", "consolidated_bar", "_consolidated"),
        ("quality", "quality", "_quality"),
    ):
        in_parquet = table_rows(read_bars(str(out), table=table).to_pylist(), schema)
        avro_rows = []
        for path in sorted((out / f"{table}_avro").rglob("*.avro")):
            with open(path, "rb") as handle:
                avro_rows += list(fastavro.reader(handle))
        assert table_rows(avro_rows, schema) == in_parquet, table
        assert [f.name for f in client.get_table(f"{target.table}{suffix}").schema] == list(field_names(schema))
        in_bigquery = client.query(f"SELECT * FROM `{target.table}{suffix}`").result()
        assert table_rows((dict(r.items()) for r in in_bigquery), schema) == in_parquet, table
        # The latest view: one row per (pair, window) or (venue, window), its newest pane, the final one.
        latest = client.query(f"SELECT * FROM `{target.table}{suffix}_latest`").result()
        final = [r for r in in_parquet if r["is_final"]]
        assert table_rows((dict(r.items()) for r in latest), schema) == final, table
        assert len(final) == len({(r["exchange"], r["symbol"], r["window_start"]) for r in in_parquet})
        messages = read_topic(kafka_bootstrap, f"venues{suffix}", len(in_parquet))
        assert table_rows((decode(m.value(), schema, store) for m in messages), schema) == in_parquet, table
        if table == "bars_consolidated":
            assert {(r["exchange"], r["symbol"]) for r in in_parquet} == {("consolidated", "BTC/USD")}
            assert {m.key() for m in messages} == {b"consolidated:BTC/USD"}
            assert any(json.loads(r["excluded"]) == {"kraken:XBTUSD": "deviation"} for r in in_parquet)
            assert len({r["window_start"] // MICROS_PER_DAY for r in in_parquet}) == 2  # both sides of the midnight
        else:
            assert {(r["exchange"], r["symbol"]) for r in in_parquet} == {
                ("binance", "BTCUSDT"),
                ("coinbase", "BTC-USD"),
                ("kraken", "XBTUSD"),
            }
            assert sum(r["trade_count"] for r in final) == sum(len(t) for t in venues.values())
            assert any(r["exclusion_reason"] == "deviation" for r in in_parquet)

    time_bars = comparable(dict(r.items()) for r in client.query(f"SELECT * FROM `{target.table}`").result())
    assert time_bars == parquet_bars(out) and len(read_topic(kafka_bootstrap, "venues", len(time_bars))) == len(
        time_bars
    )
