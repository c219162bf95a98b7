"""Iceberg tables of bars and dead letters (pyiceberg): the catalog, the schemas derived from
``schemas/*.avsc``, atomic writes, and compaction. Beam-free: the sink's DoFns
(``io_connectors.iceberg_sink``) and ``cryptobeam iceberg compact`` both call it.

Tables live in namespace ``market`` and are named as the computations name their tables
(``market.bars``, ``market.bars_ticks``, ``market.bars_consolidated``, ``market.quality``), plus
``market.dead_letters``. Bars are partitioned by day(window_start) and exchange; dead letters by
day(dead_letter_time) and reason: the one time every dead letter has (a malformed line has no
event time), the day an operator looks at, and the same layout as the Parquet ``dead_letter/reason=…``
directories and BigQuery's dead-letter table.

Every write is one transaction, committed once: readers see all of it or none of it. A commit
that loses a race with another writer (``CommitFailedException``, or a SQLite catalog busy with
another chunk) is made again on a freshly loaded table; the data files of a lost attempt are
never referenced, so no reader sees them (expire/orphan-file maintenance removes them).

Rows are revisions: each bar pane is a row. A bounded run (a backfill chunk, the seam fill)
replaces the rows of exactly the bars it wrote (``bars_replaced``): every row of its (exchange,
symbol, interval) at one of its window starts, so re-running a chunk leaves the same rows, and
chunks sharing a day (other symbols of the exchange, other time slices of a file, the seam fill)
keep each other's rows. A stream appends each flush's panes (``append``).
"""

from __future__ import annotations

import importlib.util
import logging
import random
import time
import warnings
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import (
    AlwaysFalse,
    And,
    EqualTo,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from io_connectors.sinks.iceberg import IcebergTarget
from schemas import arrow_schema, avro_schema, non_null
from transforms.computations import COMPUTATIONS, table_named

_LOG = logging.getLogger(__name__)

NAMESPACE = "market"
DEAD_LETTERS = "dead_letters"
COMMIT_ATTEMPTS = 8


class IcebergError(Exception):
    """The catalog or a table cannot be used as asked; its message is the one line the user sees."""


def known_tables() -> dict[str, str]:
    """Every table the sink can write, by name, with its schema (``schemas/<schema>.avsc``)."""
    tables = {t.name: t.schema for computation in COMPUTATIONS for t in computation.all_tables()}
    return {**tables, DEAD_LETTERS: "dead_letter"}


def identifier(table: str) -> str:
    return f"{NAMESPACE}.{table}"


# --- the catalog ---


def open_catalog(target: IcebergTarget):
    """The catalog, reached now: IcebergError, one line, when it cannot be."""
    try:
        catalog = load_catalog("cryptobeam", **target.catalog_properties())
        catalog.list_namespaces()  # a lazy client (REST, Glue) connects here, not when it is made
        return catalog
    except Exception as error:  # any client's own failure: the user sees the catalog and why
        raise IcebergError(f"cannot open Iceberg catalog {target.shown}: {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_catalog(target: IcebergTarget) -> None:
    """What the sink needs before a run: the catalog reachable, namespace ``market`` there, and each
    table it can write either absent or writable with its ``.avsc`` schema (see ``incompatibility``)."""
    if importlib.util.find_spec("pyiceberg_core") is None:  # pyiceberg computes day() partition values with it
        raise IcebergError(
            "--sink iceberg needs pyiceberg-core for its day partitions: pip install 'pyiceberg[pyiceberg-core]'"
        )
    catalog = open_catalog(target)
    ensure_namespace(catalog)
    existing = {name for _namespace, name in _listed(catalog)}
    for table, schema in known_tables().items():
        if table in existing:
            problem = incompatibility(_load(catalog, table).schema(), iceberg_schema(schema))
            if problem:
                raise IcebergError(f"Iceberg table {identifier(table)} cannot take {schema}.avsc: {problem}")


def _listed(catalog) -> list[tuple[str, ...]]:
    try:
        return catalog.list_tables(NAMESPACE)
    except Exception as error:
        raise IcebergError(f"cannot list Iceberg namespace {NAMESPACE}: {one_line(error)}") from None


def _load(catalog, table: str):
    try:
        return catalog.load_table(identifier(table))
    except Exception as error:  # a table whose metadata file is gone or unreadable, among others
        raise IcebergError(f"cannot load Iceberg table {identifier(table)}: {one_line(error)}") from None


def ensure_namespace(catalog) -> None:
    try:
        catalog.create_namespace_if_not_exists(NAMESPACE)
    except NamespaceAlreadyExistsError:  # created by a writer in parallel
        pass
    except Exception as error:
        raise IcebergError(f"cannot create Iceberg namespace {NAMESPACE}: {one_line(error)}") from None


# --- schemas, from the .avsc files ---


def iceberg_type(avro_type):
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return TimestamptzType()  # Avro's timestamp-micros is an instant (UTC), as Iceberg's timestamptz
        return iceberg_type(avro_type["type"])
    return {
        "string": StringType(),
        "double": DoubleType(),
        "float": FloatType(),
        "long": LongType(),
        "int": IntegerType(),
        "boolean": BooleanType(),
        "bytes": BinaryType(),
    }[avro_type]


def iceberg_schema(name: str):
    """The Iceberg schema of ``schemas/<name>.avsc``: the same fields in order, a ``["null", T]``
    union optional, anything else required, docs kept."""

    fields = []
    for field_id, field in enumerate(avro_schema(name)["fields"], start=1):
        inner, nullable = non_null(field["type"])
        fields.append(
            NestedField(field_id, field["name"], iceberg_type(inner), required=not nullable, doc=field.get("doc"))
        )
    return Schema(*fields)


def partition_spec(schema, table: str):
    """Bars: day(window_start), exchange. Dead letters: day(dead_letter_time), reason (module docstring)."""
    time_field, value_field = ("dead_letter_time", "reason") if table == DEAD_LETTERS else ("window_start", "exchange")
    return PartitionSpec(
        PartitionField(schema.find_field(time_field).field_id, 1000, DayTransform(), f"{time_field}_day"),
        PartitionField(schema.find_field(value_field).field_id, 1001, IdentityTransform(), value_field),
    )


_PROMOTIONS = {("int", "long"), ("float", "double")}


def incompatibility(existing, wanted) -> str | None:
    """Why a table with schema ``existing`` cannot take rows of schema ``wanted``, or None when it
    can, evolving if need be: a field of another type (beyond Iceberg's int->long, float->double)
    cannot be changed, and a required field the rows lack would have no value."""
    wanted_names = {f.name for f in wanted.fields}
    for field in wanted.fields:
        found = existing.find_field(field.name) if field.name in existing._name_to_id else None
        if found is None or found.field_type == field.field_type:
            continue
        if (str(found.field_type), str(field.field_type)) not in _PROMOTIONS:
            return f"field {field.name} is {found.field_type} in the table, {field.field_type} in the schema"
    for field in existing.fields:
        if field.required and field.name not in wanted_names:
            return f"the table requires field {field.name}, which the schema does not have"
    return None


def evolved(existing, wanted):
    """``wanted`` as ``union_by_name`` should take it: a field the table lacks is added optional
    (old rows have no value for it), so old snapshots stay readable with their own schema."""
    names = set(existing._name_to_id)
    return Schema(
        *[
            f
            if f.name in names or not f.required
            else NestedField(f.field_id, f.name, f.field_type, required=False, doc=f.doc)
            for f in wanted.fields
        ]
    )


def ensure_table(catalog, table: str, schema: str | None = None):
    """The table, created when missing (partitioned, see ``partition_spec``) or evolved to its
    ``.avsc`` schema; IcebergError when its schema cannot take the rows."""
    schema = schema or known_tables()[table]
    wanted = iceberg_schema(schema)
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            found = catalog.load_table(identifier(table))
        except NoSuchTableError:
            ensure_namespace(catalog)
            try:
                return catalog.create_table(
                    identifier(table), schema=wanted, partition_spec=partition_spec(wanted, table)
                )
            except TableAlreadyExistsError:  # created by a writer in parallel
                continue
        problem = incompatibility(found.schema(), wanted)
        if problem:
            raise IcebergError(f"Iceberg table {identifier(table)} cannot take {schema}.avsc: {problem}")
        missing = [f.name for f in wanted.fields if f.name not in found.schema()._name_to_id]
        if not missing:
            return found
        try:
            with found.update_schema() as update:
                update.union_by_name(evolved(found.schema(), wanted))
            _LOG.info("%s: added %s", identifier(table), ", ".join(missing))
        except (CommitFailedException, *_busy_errors()):
            _pause(attempt)
    raise IcebergError(f"Iceberg table {identifier(table)}: could not create or evolve it, others kept changing it")


# --- writes ---


def arrow_rows(rows: list[dict], schema: str, table) -> pa.Table:
    """Records (as the pipeline holds them) as Arrow in the table's current schema: its columns in
    its order, a column the records lack (an older field) null."""
    given = pa.Table.from_pylist(rows, schema=arrow_schema(schema))
    target = table.schema().as_arrow()
    columns = [
        given.column(f.name).cast(f.type) if f.name in given.column_names else pa.nulls(len(given), f.type)
        for f in target
    ]
    return pa.Table.from_arrays(columns, schema=target)


def commit(catalog, table: str, write, schema: str | None = None) -> int:
    """``write(transaction, table)`` in one transaction, committed once; made again on a freshly
    loaded table when another writer committed first and pyiceberg's own retry (which rebases the
    same files on the new snapshot) could not, e.g. because the other writer added rows in what
    this one replaces. Returns the snapshot id committed."""
    for attempt in range(COMMIT_ATTEMPTS):
        loaded = ensure_table(catalog, table, schema)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                with loaded.transaction() as transaction:
                    write(transaction, loaded)
            return loaded.metadata.current_snapshot_id  # the transaction updated it to its own commit
        except (CommitFailedException, ValidationException, *_busy_errors()) as error:
            # ValidationException: another writer added rows where this commit replaces rows
            # (pyiceberg's own retry found the conflict): the whole write is made again on them.
            if attempt + 1 == COMMIT_ATTEMPTS:
                raise
            _LOG.info("%s: commit lost to another writer (%s), trying again", identifier(table), one_line(error))
            _pause(attempt)
    raise AssertionError("unreachable")


def _busy_errors() -> tuple[type, ...]:
    """A SQLite catalog another process holds locked answers OperationalError: a commit to try again."""
    try:  # an optional dependency: only SQL catalogs need it
        from sqlalchemy.exc import OperationalError
    except ImportError:
        return ()
    return (OperationalError,)


def _pause(attempt: int) -> None:
    time.sleep(random.uniform(0.05, 0.2) * 2 ** min(attempt, 5))


def append(catalog, table: str, rows: list[dict], schema: str | None = None) -> int:
    """A stream's panes of one flush, appended in one commit."""
    schema = schema or known_tables()[table]
    return commit(catalog, table, lambda txn, loaded: txn.append(arrow_rows(rows, schema, loaded)), schema)


def replace(catalog, table: str, rows: list[dict], schema: str | None = None) -> int:
    """A bounded run's rows, replacing those of the same bars (or dead letters) in one commit."""
    schema = schema or known_tables()[table]
    replaced = dead_letters_replaced(rows) if table == DEAD_LETTERS else bars_replaced(rows)
    return commit(catalog, table, lambda txn, loaded: txn.overwrite(arrow_rows(rows, schema, loaded), replaced), schema)


def bars_replaced(bars: list[dict]):
    """The rows of exactly these bars, every revision: per (exchange, symbol, interval), those at one
    of their window starts (bounded by the first and last, so Iceberg reads only their days)."""
    starts: dict[tuple, set[int]] = defaultdict(set)
    for bar in bars:
        starts[(bar["exchange"], bar["symbol"], bar["interval"])].add(bar["window_start"])
    return _any_of(
        [
            And(
                EqualTo("exchange", exchange),
                EqualTo("symbol", symbol),
                EqualTo("interval", interval),
                GreaterThanOrEqual("window_start", min(windows)),
                LessThanOrEqual("window_start", max(windows)),
                In("window_start", windows),
            )
            for (exchange, symbol, interval), windows in sorted(starts.items())
        ]
    )


def dead_letters_replaced(records: list[dict]):
    """The dead letters of exactly these records: per source, those at one of their offsets (or,
    for records with none, every one of that source without an offset)."""
    offsets: dict[str, set[int]] = defaultdict(set)
    without_offset: set[str] = set()
    for record in records:
        if record["source_offset"] is None:
            without_offset.add(record["source"])
        else:
            offsets[record["source"]].add(record["source_offset"])
    return _any_of(
        [And(EqualTo("source", source), In("source_offset", found)) for source, found in sorted(offsets.items())]
        + [And(EqualTo("source", source), IsNull("source_offset")) for source in sorted(without_offset)]
    )


def _any_of(expressions: list):
    if not expressions:
        return AlwaysFalse()
    return expressions[0] if len(expressions) == 1 else Or(*expressions)


# --- reading and compaction ---


def bar_key(table: str) -> tuple[str, ...]:
    """What names one bar of a table across its panes (as ``io_connectors.bar_reader.bar_key``)."""
    return ("exchange", "symbol", "interval", *table_named(table).identity)


def newest_revisions(rows: pa.Table, table: str) -> pa.Table:
    """The newest pane of each bar: a final pane first, then the highest pane index (a restarted
    stream's panes count again from 0, and its final pane holds the same trades)."""
    key = list(bar_key(table))
    numbered = rows.select(key + ["is_final", "pane_index"]).append_column(
        "row", pa.array(range(rows.num_rows), pa.int64())
    )
    ordered = numbered.sort_by(
        [(name, "ascending") for name in key] + [("is_final", "descending"), ("pane_index", "descending")]
    )
    first = ordered.group_by(key, use_threads=False).aggregate([("row", "first")])
    kept = first.column("row_first")
    return rows.take(pc.take(kept, pc.sort_indices(kept)))  # in the table's own order


def compact(catalog, table: str) -> tuple[int, int]:
    """Rewrite the partitions holding older revisions to the newest revision of each bar, in one
    commit (made again on a fresh table if a stream committed meanwhile); (rows before, after)."""
    counts = [0, 0]

    def rewrite(transaction, loaded):
        rows = loaded.scan().to_arrow()
        newest = newest_revisions(rows, table)
        counts[:] = [rows.num_rows, newest.num_rows]
        if newest.num_rows == rows.num_rows:
            return
        days = _partitions_with_revisions(rows, newest, table)
        day_us = 86_400_000_000
        replaced = _any_of(
            [
                And(
                    EqualTo("exchange", exchange),
                    GreaterThanOrEqual("window_start", day * day_us),
                    LessThan("window_start", (day + 1) * day_us),
                )
                for exchange, day in days
            ]
        )
        starts = pc.cast(newest.column("window_start"), pa.int64()).to_numpy() // day_us
        keep = pa.array([(e, int(d)) in days for e, d in zip(newest.column("exchange").to_pylist(), starts)])
        transaction.overwrite(newest.filter(keep), replaced)

    commit(catalog, table, rewrite)
    return counts[0], counts[1]


def _partitions_with_revisions(rows: pa.Table, newest: pa.Table, table: str) -> set[tuple[str, int]]:
    """(exchange, day number) of the partitions that hold more rows than bars."""
    day_us = 86_400_000_000

    def per_partition(data):
        starts = pc.cast(data.column("window_start"), pa.int64()).to_numpy() // day_us
        return Counter(zip(data.column("exchange").to_pylist(), (int(d) for d in starts)))

    before, after = per_partition(rows), per_partition(newest)
    return {partition for partition, count in before.items() if count != after[partition]}


def bar_tables_in(catalog) -> list[str]:
    """The bar tables (not dead letters) that exist in namespace ``market``."""
    existing = {name for _namespace, name in _listed(catalog)}
    return [name for name in known_tables() if name in existing and name != DEAD_LETTERS]


__all__ = [
    "DEAD_LETTERS",
    "NAMESPACE",
    "IcebergError",
    "append",
    "check_catalog",
    "compact",
    "ensure_table",
    "iceberg_schema",
    "known_tables",
    "newest_revisions",
    "open_catalog",
    "replace",
]
