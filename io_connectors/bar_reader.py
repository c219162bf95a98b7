"""Read an output directory's bars back, the way a consumer should.

A bar may have several panes (EARLY, ON_TIME, LATE), and a restarted stream writes the final
pane of the windows it rebuilt a second time. The final bars are the ``is_final`` rows, one per
bar, the newest file winning: files are named ``part-<run>-…`` and a later run sorts later.

Beam-free, so ``validate`` and the report read outputs without importing Beam.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.dataset as ds

from io_connectors.bar_tables import PARTITION_METADATA_KEY
from transforms.computations import table_named


def bar_key(table: str = "bars") -> tuple[str, ...]:
    """What names a bar of a table across its panes and runs."""
    return ("exchange", "symbol", "interval", *table_named(table).identity)


def read_bars(out: str, unreadable: list[tuple[str, str]] | None = None, table: str = "bars") -> pa.Table:
    """Every bar row of a table (``out/bars`` for time bars, ``out/bars_ticks`` and the like)
    with its partition columns and a ``file`` column.

    With ``unreadable`` (a list), files that are not readable Parquet (empty, cut short, garbage)
    are skipped and listed there as (path, why); without it they raise."""
    root = os.path.join(out, table)
    dataset = ds.dataset(root, format="parquet", partitioning="hive", exclude_invalid_files=unreadable is not None)
    if unreadable is not None:
        valid = set(dataset.files)
        unreadable += [(path, "not a readable Parquet file") for path in data_files(root) if path not in valid]
    tables = []
    for fragment in dataset.get_fragments():
        try:
            table = with_whole_partition_values(fragment, fragment.to_table(schema=dataset.schema))
        except (pa.ArrowException, OSError) as error:
            if unreadable is None:
                raise
            unreadable.append((fragment.path, f"{type(error).__name__}: {error}"))
            continue
        tables.append(
            table.append_column("file", pa.array([os.path.basename(fragment.path)] * table.num_rows, pa.string()))
        )
    return (
        pa.concat_tables(tables)
        if tables
        else dataset.schema.empty_table().append_column("file", pa.array([], pa.string()))
    )


def data_files(root: str) -> list[str]:
    """The files a dataset of ``root`` reads: as Arrow's discovery, none below a hidden or ``_`` name."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith((".", "_"))]
        found += [os.path.join(directory, name) for name in names if not name.startswith((".", "_"))]
    return sorted(found)


def with_whole_partition_values(fragment, table: pa.Table) -> pa.Table:
    """A file whose path holds a cut partition value keeps the whole value in its metadata."""
    kept = (fragment.physical_schema.metadata or {}).get(PARTITION_METADATA_KEY)
    for name, value in (json.loads(kept) if kept else {}).items():
        index = table.schema.get_field_index(name)
        if index >= 0:  # a reader of some columns only may not have read it
            table = table.set_column(index, name, pa.array([value] * table.num_rows, table.schema.field(index).type))
    return table


def final_bars(out: str, table: str = "bars") -> list[dict]:
    """One final row per bar of a table, sorted by bar key."""
    newest: dict[tuple, dict] = {}
    key_fields = bar_key(table)
    for bar in read_bars(out, table=table).filter(ds.field("is_final")).to_pylist():
        key = tuple(bar[name] for name in key_fields)
        if key not in newest or bar["file"] >= newest[key]["file"]:
            newest[key] = bar
    return [newest[key] for key in sorted(newest)]
