"""BigQuery sink: bars as revision rows (one per pane) and dead letters, each table created when missing.

One sink for every runner: a DoFn on google-cloud-bigquery's insert API (``insertAll``), with a
deterministic insert id per bar pane so BigQuery can drop retried inserts. With an endpoint
override it writes to a local emulator; without one, to BigQuery itself. Rows that BigQuery
rejects come back with its error and become dead letters; rows merely ``stopped`` because a
neighbour was rejected are sent again. Readers query the ``<table>_latest`` view, which keeps
the newest pane of each bar.

Why not Beam's WriteToBigQuery: it has no endpoint option, and its failed-row output differs by
method; this DoFn behaves the same against the emulator and in production. At very high volume
on Dataflow, the Storage Write API would be the better transport.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import time
from dataclasses import dataclass

import apache_beam as beam
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import GoogleAPICallError
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from io_connectors.sinks.base import SinkWrites
from io_connectors.sinks.bigquery import BigQueryTarget
from schemas import bigquery_schema, field_names
from transforms.computations import TIME_BARS, OutputTable
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter
from transforms.event_time import micros_to_datetime

MAX_ROWS_PER_REQUEST = 500
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class TableLayout:
    schema_name: str
    partition_field: str
    clustering: tuple
    latest_view_key: tuple | None = None  # columns identifying one bar, for the latest-revision view


BAR_TABLE = TableLayout(
    "bar", "window_start", ("exchange", "symbol"), ("exchange", "symbol", "interval", "window_start")
)
DEAD_LETTER_TABLE = TableLayout("dead_letter", "dead_letter_time", ("reason",))


CREATE_ATTEMPTS = 4


def bigquery_client(target: BigQueryTarget) -> bigquery.Client:
    """A client of the target's project, or of its endpoint (an emulator: no credentials)."""
    if not target.endpoint:
        return bigquery.Client(project=target.project)
    return bigquery.Client(
        project=target.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=target.endpoint),
    )


def ensure_table(client, target: BigQueryTarget, layout: TableLayout) -> None:
    """Create the dataset, the table (partitioned by day, clustered) and its latest view if missing.
    Writers in parallel (a backfill's chunks) create them at once, and the emulator can answer a
    create that lost such a race with 400 (a failed commit) rather than "already exists": a failed
    create is tried again, and then finds the table there."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            _create_missing(client, target, layout)
            return
        except GoogleAPICallError:
            if attempt + 1 == CREATE_ATTEMPTS:
                raise
            time.sleep(0.25 * 2**attempt)


def _create_missing(client, target: BigQueryTarget, layout: TableLayout) -> None:
    client.create_dataset(target.dataset, exists_ok=True)
    fields = [
        bigquery.SchemaField(f["name"], f["type"], mode=f["mode"], description=f["description"])
        for f in bigquery_schema(layout.schema_name)
    ]
    table = bigquery.Table(target.table, schema=fields)
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=layout.partition_field
    )
    table.clustering_fields = list(layout.clustering)
    client.create_table(table, exists_ok=True)
    if layout.latest_view_key:
        view = bigquery.Table(f"{target.table}_latest")
        view.view_query = latest_revision_query(
            target.table, layout.latest_view_key, "is_filled" in field_names(layout.schema_name)
        )
        client.create_table(view, exists_ok=True)


def latest_revision_query(table: str, key: tuple, fillable: bool = True) -> str:
    """The newest pane of each bar: the highest pane_index; where a table has filled bars
    (``fillable``: its rows have ``is_filled``), a real bar wins over a filled one."""
    order = "pane_index DESC, is_filled ASC" if fillable else "pane_index DESC"
    return (
        f"SELECT * EXCEPT(revision) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {', '.join(key)} "
        f"ORDER BY {order}) AS revision FROM `{table}`) WHERE revision = 1"
    )


def to_json_row(record: dict, schema_name: str) -> dict:
    """A record as BigQuery's JSON API wants it: timestamps as RFC 3339, bytes as base64."""
    row = {}
    for field in bigquery_schema(schema_name):
        value = record.get(field["name"])
        if value is None:
            row[field["name"]] = None
        elif field["type"] == "TIMESTAMP":
            row[field["name"]] = micros_to_datetime(value).isoformat()
        elif field["type"] == "BYTES":
            row[field["name"]] = base64.b64encode(value).decode()
        elif field["type"] == "FLOAT64" and not math.isfinite(value):
            row[field["name"]] = str(value)  # BigQuery reads "inf", "-inf", "nan"; JSON has no literal for them
        else:
            row[field["name"]] = value
    return row


def bar_insert_id(bar: dict) -> str:
    return _insert_id(("exchange", "symbol", "interval", "window_start", "is_filled", "pane_index"), bar)


def _insert_id(fields: tuple[str, ...], row: dict) -> str:
    return "|".join(str(row[k]) for k in fields)


def dead_letter_insert_id(record: dict) -> str:
    return "|".join(str(record[k]) for k in ("source", "source_offset", "reason", "stage"))


class _InsertRows(beam.DoFn):
    def __init__(self, target: BigQueryTarget, layout: TableLayout, insert_id):
        self._target, self._layout, self._insert_id = target, layout, insert_id
        self._rows = beam.metrics.Metrics.counter("cryptobeam", f"bigquery_rows_{layout.schema_name}")
        self._rejected = beam.metrics.Metrics.counter("cryptobeam", "sink_rejections")

    def setup(self):
        self._client = bigquery_client(self._target)
        ensure_table(self._client, self._target, self._layout)

    def process(self, records: list[dict]):
        pending = list(records)
        for _ in range(MAX_ATTEMPTS):
            if not pending:
                return
            rows = [to_json_row(r, self._layout.schema_name) for r in pending]
            errors = self._client.insert_rows_json(
                self._target.table, rows, row_ids=[self._insert_id(r) for r in pending]
            )
            failed = {e["index"]: e["errors"] for e in errors}
            self._rows.inc(len(pending) - len(failed))
            retry = []
            for index, reasons in failed.items():
                if all(reason.get("reason") == "stopped" for reason in reasons):
                    retry.append(pending[index])
                    continue
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER_TAG,
                    dead_letter(
                        "bigquery_rejected",
                        json.dumps(reasons),
                        "sink",
                        json.dumps(rows[index], default=str),
                        self._target.table,
                        None,
                        pending[index].get("exchange"),
                        pending[index].get("symbol"),
                    ),
                )
            pending = retry
        for record in pending:  # still stopped after every attempt: never silently lost
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                dead_letter(
                    "bigquery_rejected",
                    "still stopped after retries",
                    "sink",
                    json.dumps(record, default=str),
                    self._target.table,
                ),
            )


class _WriteRows(beam.PTransform):
    def __init__(self, target: BigQueryTarget, layout: TableLayout, insert_id, label=None):
        super().__init__(label)
        self._target, self._layout, self._insert_id = target, layout, insert_id

    def expand(self, records):
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=MAX_ROWS_PER_REQUEST)
            | "Insert"
            >> beam.ParDo(_InsertRows(self._target, self._layout, self._insert_id)).with_outputs(
                DEAD_LETTER_TAG, main="written"
            )
        )


def WriteBarsBigQuery(target: BigQueryTarget, table: OutputTable = TIME_BARS) -> beam.PTransform:
    """One table of bars -> revision rows in ``target`` (``<target><suffix>`` for a table other
    than time bars, e.g. ``…_ticks``); returns outputs whose ``dead_letter`` holds rejected rows."""
    if table == TIME_BARS:
        return _WriteRows(target, BAR_TABLE, bar_insert_id)
    bar_key = ("exchange", "symbol", "interval", *table.identity)
    layout = TableLayout(table.schema, "window_start", ("exchange", "symbol"), bar_key)
    return _WriteRows(target.named(table.suffix), layout, functools.partial(_insert_id, (*bar_key, "pane_index")))


def WriteDeadLettersBigQuery(target: BigQueryTarget) -> beam.PTransform:
    """Dead letters -> ``<target>_dead_letters``."""
    return _WriteRows(target.named("_dead_letters"), DEAD_LETTER_TABLE, dead_letter_insert_id)


def write_to_bigquery(bars, target: BigQueryTarget) -> SinkWrites:
    """``--sink bigquery``'s writing (``io_connectors.sinks.bigquery``): one table of bars, and the
    run's dead letters when they come with it (the run's first table); rows BigQuery rejects are
    dead letters."""
    sent = bars.bars | "WriteBarsBigQuery" >> WriteBarsBigQuery(target, bars.table)
    if bars.dead_letters is None:
        return SinkWrites(rejected=(sent.dead_letter,))
    dead_sent = bars.dead_letters | "WriteDeadLettersBigQuery" >> WriteDeadLettersBigQuery(target)
    return SinkWrites(rejected=(sent.dead_letter, dead_sent.dead_letter))
