"""BigQuery sink against a real local emulator: tables as specified, bars equal Parquet, re-runs
leave the latest-revision view unchanged, rejected rows become dead letters."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq

from io_connectors.bigquery_sink import BAR_TABLE, BigQueryTarget, _InsertRows, bar_insert_id
from runners.profiles import in_process_runner
from schemas import field_names
from tests.support.commands import run_backfill
from tests.support.helpers import COLLECTED, Collect
from tests.support.paths import BUNDLED
from transforms.bar_spec import BarSpec
from transforms.gap_fill import filled_bar


def query(target: BigQueryTarget, sql: str):
    return [dict(row.items()) for row in target.client().query(sql).result()]


def test_backfill_to_bigquery_equals_parquet_and_reruns_change_nothing(bigquery_endpoint, tmp_path):
    target = BigQueryTarget("local.cryptobeam.bars", bigquery_endpoint)
    out = tmp_path / "out"
    options = ("--fill-gaps", "--sink", "bigquery", "--bq-table", target.table, "--bq-endpoint", bigquery_endpoint)
    result = run_backfill("binance-aggtrades", BUNDLED, out, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    table = target.client().get_table(target.table)
    assert table.time_partitioning.field == "window_start" and table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["exchange", "symbol"]
    assert [f.name for f in table.schema] == field_names("bar")

    key = ("exchange", "symbol", "window_start", "is_filled")
    latest_sql = f"SELECT * FROM `{target.table}_latest`"
    in_bigquery = sorted(query(target, latest_sql), key=lambda r: [r[k] for k in key])
    in_parquet = sorted(
        pq.read_table(out / "bars").drop_columns(["date"]).to_pylist(), key=lambda r: [r[k] for k in key]
    )
    assert len(in_bigquery) == len(in_parquet) == 2880
    for b, p in zip(in_bigquery, in_parquet):
        assert {k: b[k] for k in field_names("bar")} == {k: p[k] for k in field_names("bar")}

    rerun = run_backfill("binance-aggtrades", BUNDLED, out, *options, "--overwrite")
    assert rerun.returncode == 0, rerun.stderr
    # Same insert ids: BigQuery may drop the repeated inserts (best effort) or keep them as extra
    # revision rows; either way the latest-revision view must not change.
    assert 2880 <= query(target, f"SELECT COUNT(*) AS n FROM `{target.table}`")[0]["n"] <= 2 * 2880
    assert sorted(query(target, latest_sql), key=lambda r: [r[k] for k in key]) == in_bigquery


def test_rows_bigquery_rejects_become_dead_letters(bigquery_endpoint):
    target = BigQueryTarget("local.cryptobeam.rejects", bigquery_endpoint)
    good = filled_bar("binance", "BTCUSDT", BarSpec.of("1m"), 1_704_067_200_000_000, 42.0)
    bad = {**good, "window_start": good["window_start"] + 60_000_000, "trade_count": "many"}
    pipeline = beam.Pipeline(runner=in_process_runner())
    outputs = (
        pipeline
        | beam.Create([[good, bad]])
        | beam.ParDo(_InsertRows(target, BAR_TABLE, bar_insert_id)).with_outputs("dead_letter", main="written")
    )
    outputs.dead_letter | beam.Map(Collect("rejected"))
    pipeline.run().wait_until_finish()
    rejected = COLLECTED["rejected"]
    assert [(r["reason"], r["stage"], r["source"]) for r in rejected] == [("bigquery_rejected", "sink", target.table)]
    assert "trade_count" in rejected[0]["error_message"] and '"many"' in rejected[0]["payload_string"]
    rows = query(target, f"SELECT close FROM `{target.table}`")
    assert rows == [{"close": 42.0}]  # the good row was written, not lost with its rejected neighbour


def test_latest_view_keeps_the_newest_pane_of_each_bar(bigquery_endpoint):
    target = BigQueryTarget("local.cryptobeam.revisions", bigquery_endpoint)
    spec = BarSpec.of("1m")
    start = 1_704_067_200_000_000
    filled = filled_bar("binance", "ETHUSDT", spec, start, 10.0)
    early = {**filled, "is_filled": False, "trade_count": 1, "close": 11.0, "pane_timing": "EARLY", "is_final": False}
    on_time = {**early, "close": 12.0, "trade_count": 2, "pane_timing": "ON_TIME", "pane_index": 1, "is_final": True}
    pipeline = beam.Pipeline(runner=in_process_runner())
    (
        pipeline
        | beam.Create([[filled, early, on_time]])
        | beam.ParDo(_InsertRows(target, BAR_TABLE, bar_insert_id)).with_outputs("dead_letter", main="written")
    )
    pipeline.run().wait_until_finish()
    assert query(target, f"SELECT COUNT(*) AS n FROM `{target.table}`")[0]["n"] == 3
    latest = query(target, f"SELECT close, pane_index, is_filled FROM `{target.table}_latest`")
    assert latest == [{"close": 12.0, "pane_index": 1, "is_filled": False}]
