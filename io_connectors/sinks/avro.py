"""Avro bar files: the same bars as the Parquet files, whole records as ``schemas/bar.avsc``
publishes them, one directory of their own (``bars_avro/``). The writer is ``io_connectors.parquet_sink``."""

from __future__ import annotations

from io_connectors.sinks.base import Sink, SinkWrites


class AvroSink(Sink):
    name = "avro"
    description = (
        "bars_avro/ (<table>_avro/ for other tables): deflate Avro files of whole records, partitioned as "
        "the Parquet files"
    )

    def write(self, bars, target) -> SinkWrites:
        # Beam loads when a pipeline is built, not when the command line offers sinks
        from io_connectors.parquet_sink import write_bar_files

        return SinkWrites(files=write_bar_files(bars, "avro", "WriteBarsAvro", counts_files=False))
