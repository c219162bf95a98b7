"""Running the installed ``cryptobeam`` command, as a user would."""

from __future__ import annotations

import subprocess

from tests.support.paths import CLI, ROOT


def cli(*args, timeout=600):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)


def cryptobeam(*args, cwd=ROOT, timeout=600):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_backfill(source: str, inputs, out, *options, cwd=ROOT, timeout=600) -> subprocess.CompletedProcess:
    """``cryptobeam backfill`` of the files ``inputs`` names (a path or a glob) as ``source`` into
    ``out``, without the progress display; ``options`` go last."""
    return cryptobeam(
        "backfill",
        "--source",
        source,
        "--input",
        str(inputs),
        "--out",
        str(out),
        "--no-progress",
        *options,
        cwd=cwd,
        timeout=timeout,
    )


def every_sink(bigquery_endpoint: str, bigquery_table: str, kafka_bootstrap: str, kafka_topic: str) -> list[str]:
    """Options that send a run's bars to Avro files, a BigQuery table and a Kafka topic, beside Parquet."""
    return [
        "--sink",
        "avro",
        "--sink",
        "bigquery",
        "--bq-table",
        bigquery_table,
        "--bq-endpoint",
        bigquery_endpoint,
        "--sink",
        "kafka",
        "--kafka",
        kafka_bootstrap,
        "--kafka-bars-topic",
        kafka_topic,
    ]
