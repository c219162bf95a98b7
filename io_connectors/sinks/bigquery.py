"""BigQuery: bars as revision rows (one per pane) and the run's dead letters, through
google-cloud-bigquery's insert API (``io_connectors.bigquery_sink``, imported only to write)."""

from __future__ import annotations

from dataclasses import dataclass

from io_connectors.sinks.base import Sink, SinkOptionError, SinkWrites


class BigQueryTargetError(SinkOptionError):
    """A table name that is not project.dataset.table."""


@dataclass(frozen=True)
class BigQueryTarget:
    table: str  # project.dataset.table
    endpoint: str | None = None

    def __post_init__(self):
        parts = self.table.split(".")
        if len(parts) != 3 or not all(parts):
            raise BigQueryTargetError(f"bad BigQuery table {self.table!r}: use project.dataset.table")

    @property
    def project(self) -> str:
        return self.table.split(".")[0]

    @property
    def dataset(self) -> str:
        return ".".join(self.table.split(".")[:2])

    def named(self, suffix: str) -> "BigQueryTarget":
        return BigQueryTarget(self.table + suffix, self.endpoint)

    def client(self):
        # google-cloud-bigquery loads only where rows are written or read, not when options are checked
        from io_connectors.bigquery_sink import bigquery_client

        return bigquery_client(self)


class BigQuerySink(Sink):
    name = "bigquery"
    description = (
        "BigQuery tables: bars as revision rows (newest pane in <table>_latest; every other table in "
        "its own, <table>_ticks, <table>_consolidated, <table>_quality and the like) and <table>_dead_letters"
    )

    def add_options(self, command, streaming: bool) -> None:
        command.add_argument("--bq-table", help="BigQuery table for --sink bigquery: project.dataset.table")
        command.add_argument(
            "--bq-endpoint", help="BigQuery API endpoint override, e.g. a local emulator's http://host:port"
        )

    def target_from_args(self, args, chosen: bool, streaming: bool) -> BigQueryTarget | None:
        if not chosen:
            if args.bq_table or args.bq_endpoint:
                raise SinkOptionError("--bq-table and --bq-endpoint go with --sink bigquery")
            return None
        if not args.bq_table:
            raise SinkOptionError("--sink bigquery needs --bq-table project.dataset.table")
        return BigQueryTarget(args.bq_table, args.bq_endpoint)

    def settings(self, target: BigQueryTarget | None) -> dict:
        return {"bigquery_table": target.table if target else None}

    def write(self, bars, target: BigQueryTarget) -> SinkWrites:
        # Beam and the client load when a pipeline is built, not when the command line offers sinks
        from io_connectors.bigquery_sink import write_to_bigquery

        return write_to_bigquery(bars, target)
