"""Parquet bar files: the sink of record, written by every run (manifests, ``validate`` and the
accounting read it). The writer is ``io_connectors.parquet_sink``."""

from __future__ import annotations

from io_connectors.sinks.base import ALWAYS, Sink, SinkWrites


class ParquetSink(Sink):
    name = "parquet"
    description = (
        "bars/ (bars_ticks/, bars_consolidated/, quality/ and the like for other tables): zstd Parquet "
        "files partitioned by exchange, symbol and date (always written)"
    )
    in_backfill = ALWAYS
    in_stream = ALWAYS

    def write(self, bars, target) -> SinkWrites:
        # Beam loads when a pipeline is built, not when the command line offers sinks
        from io_connectors.parquet_sink import write_bar_files

        # The only bar writer that counts its files: the accounting's bar files are Parquet files.
        return SinkWrites(files=write_bar_files(bars, "parquet", "WriteBars", counts_files=True))
