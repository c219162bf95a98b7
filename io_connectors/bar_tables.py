"""Where each table of bars lives in an output directory: ``bars/`` for time bars, ``bars_ticks/``
and the like for information bars, each file format beside Parquet in its own ``<table>_<format>/``
so a reader of one sees only its own files.

Beam-free: manifests, ``validate`` and the seam fill find a run's files with it.
"""

from __future__ import annotations

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
