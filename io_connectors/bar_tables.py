"""Where each table of bars lives in an output directory: ``bars/`` for time bars, ``bars_ticks/``
and the like for information bars, each file format beside Parquet in its own ``<table>_<format>/``
so a reader of one sees only its own files.

Beam-free: manifests, ``validate`` and the seam fill find a run's files with it.
"""

from __future__ import annotations

import re

from transforms.computations import COMPUTATIONS, OutputTable


def bar_directory(table: str, file_format: str = "parquet") -> str:
    return table if file_format == "parquet" else f"{table}_{file_format}"


PARTITION_METADATA_KEY = b"cryptobeam.partition"
"""A bar file's metadata key for partition values its path holds cut short (written by
``io_connectors.parquet_sink``, read back whole by ``io_connectors.bar_reader``)."""

BAR_FILE_FORMATS = ("parquet", "avro")
"""The formats bar files are written in (``io_connectors.parquet_sink`` encodes each)."""


def every_bar_directory() -> tuple[str, ...]:
    """Every directory a run may have written bars to, whatever it asked for."""
    return tuple(bar_directory(table.name, file_format) for table in every_table() for file_format in BAR_FILE_FORMATS)


def every_table() -> tuple[OutputTable, ...]:
    return tuple(table for computation in COMPUTATIONS for table in computation.all_tables())


def file_name_for(run: str, extension: str, unbounded: bool) -> str:
    """A bounded run (or chunk) names its files after itself, so re-running it replaces exactly
    its files; an unbounded run adds the pane index, one file per flush."""
    return f"part-{run}-{{pane:06d}}.{extension}" if unbounded else f"part-{run}.{extension}"


_PANE_FILE = re.compile(r"^part-(?P<run>[^-]+)-\d{6}\.\w+$")


def run_of(file_name: str) -> str:
    """The stream run a pane file written by ``file_name_for`` belongs to; "" for a bounded run's
    file, since all of a backfill's chunks together are one run."""
    match = _PANE_FILE.match(file_name)
    return match.group("run") if match else ""
