"""One source of truth: Avro schemas drive the Arrow schema of files written and the Beam row types."""

from __future__ import annotations

import io

import fastavro
import pyarrow as pa

from io_connectors.parquet_sink import partition_segment
from schemas import SCHEMA_NAMES, arrow_schema, avro_schema, beam_row_type, field_names, parsed_avro_schema
from transforms.bar_spec import BarSpec
from transforms.gap_fill import filled_bar


def test_arrow_and_beam_follow_avro():
    for name in SCHEMA_NAMES:
        assert arrow_schema(name).names == field_names(name) == list(beam_row_type(name)._fields)
    assert arrow_schema("bar").field("window_start").type == pa.timestamp("us", tz="UTC")
    assert arrow_schema("bar").field("vwap").nullable and not arrow_schema("bar").field("open").nullable


def test_a_bar_record_fits_both_avro_and_arrow():
    bar = filled_bar("binance", "BTCUSDT", BarSpec.of("1m"), 1_704_067_200_000_000, 42.0)
    assert set(bar) == set(field_names("bar"))
    buffer = io.BytesIO()
    fastavro.writer(buffer, parsed_avro_schema("bar"), [bar])
    buffer.seek(0)
    assert list(fastavro.reader(buffer))[0]["close"] == 42.0
    assert pa.Table.from_pylist([bar], schema=arrow_schema("bar")).num_rows == 1


def test_symbols_cannot_escape_the_output_directory():
    for hostile in ["../../x", "..", "a/b", "/etc/passwd", "x\\..\\y"]:
        segment = partition_segment("symbol", hostile)
        assert "/" not in segment and "\\" not in segment and segment not in ("..", ".")
        assert segment.startswith("symbol=")


def test_avro_docs_present():
    assert all("type" in f for f in avro_schema("trade")["fields"])
