"""The one source of truth for record shapes: the versioned ``.avsc`` files beside this module.

Arrow schemas (for Parquet) and Beam row types (for schema-aware transforms and sinks)
are derived from them here, never written by hand, so the three can never drift apart.
"""

from __future__ import annotations

import json
import typing
from functools import lru_cache
from pathlib import Path

import fastavro
import pyarrow as pa

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_NAMES = (
    "trade",
    "bar",
    "information_bar",
    "dead_letter",
    "consolidated_bar",
    "quality",
    "feed_status",
    "block",
    "token_transfer",
    "token_activity",
    "exchange_flow",
    "chain_market_fusion",
)


@lru_cache(maxsize=None)
def avro_schema(name: str) -> dict:
    """The raw Avro schema (a dict) for ``trade``, ``bar`` or ``dead_letter``."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


@lru_cache(maxsize=None)
def parsed_avro_schema(name: str):
    """The schema parsed by fastavro, ready for readers and writers."""
    return fastavro.parse_schema(avro_schema(name))


def field_names(name: str) -> list[str]:
    return [f["name"] for f in avro_schema(name)["fields"]]


def non_null(avro_type):
    """Strip a ``["null", T]`` union down to ``(T, nullable)``."""
    if isinstance(avro_type, list):
        members = [t for t in avro_type if t != "null"]
        if len(members) != 1:
            raise ValueError(f"only [null, T] unions are supported, got {avro_type}")
        return members[0], "null" in avro_type
    return avro_type, False


def _arrow_type(avro_type) -> pa.DataType:
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return pa.timestamp("us", tz="UTC")
        return _arrow_type(avro_type["type"])
    return {
        "string": pa.string(),
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "int": pa.int32(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }[avro_type]


@lru_cache(maxsize=None)
def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema derived from the Avro schema; Avro docs become field metadata."""
    fields = []
    for f in avro_schema(name)["fields"]:
        inner, nullable = non_null(f["type"])
        meta = {"doc": f["doc"]} if "doc" in f else None
        fields.append(pa.field(f["name"], _arrow_type(inner), nullable=nullable, metadata=meta))
    return pa.schema(fields)


def _python_type(avro_type):
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return int
        return _python_type(avro_type["type"])
    return {"string": str, "double": float, "float": float, "long": int, "int": int, "boolean": bool, "bytes": bytes}[
        avro_type
    ]


@lru_cache(maxsize=None)
def beam_row_type(name: str) -> type:
    """A ``typing.NamedTuple`` with a registered Beam RowCoder, for schema-aware Beam transforms."""
    # Beam only here: the command line reads the Arrow schemas as it plans, before Beam loads
    import apache_beam as beam

    annotations = []
    for f in avro_schema(name)["fields"]:
        inner, nullable = non_null(f["type"])
        py = _python_type(inner)
        annotations.append((f["name"], typing.Optional[py] if nullable else py))
    row_type = typing.NamedTuple(avro_schema(name)["name"], annotations)
    beam.coders.registry.register_coder(row_type, beam.coders.RowCoder)
    return row_type


def _bigquery_type(avro_type) -> str:
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return "TIMESTAMP"
        return _bigquery_type(avro_type["type"])
    return {
        "string": "STRING",
        "double": "FLOAT64",
        "float": "FLOAT64",
        "long": "INT64",
        "int": "INT64",
        "boolean": "BOOL",
        "bytes": "BYTES",
    }[avro_type]


def bigquery_schema(name: str) -> list[dict]:
    """BigQuery table fields (name, type, mode, description) derived from the Avro schema."""
    fields = []
    for f in avro_schema(name)["fields"]:
        inner, nullable = non_null(f["type"])
        fields.append(
            {
                "name": f["name"],
                "type": _bigquery_type(inner),
                "mode": "NULLABLE" if nullable else "REQUIRED",
                "description": f.get("doc", ""),
            }
        )
    return fields
