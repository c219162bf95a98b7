"""Batches and chunks travel with coders that round-trip them and size them without encoding."""

from __future__ import annotations

import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from io_connectors.files import InputFile
from io_connectors.raw_batch import RawBatch
from io_connectors.raw_batch_coder import RawBatchCoder
from io_connectors.source_formats import SOURCES, parser_for
from io_connectors.sources import ReadTradeFiles
from transforms.bar_spec import BarSpec
from transforms.keys import KeyBySymbol
from transforms.lateness import RouteTooLateAndChunk
from transforms.parse import ParseTrades
from transforms.sized_coders import ArrowTableCoder, TradeChunkCoder
from transforms.trade_batch import make_trade_batch
from transforms.trade_chunk import chunks_of
from transforms.validate_records import ValidateTrades

MINUTE = 60_000_000


def a_batch(n: int = 5_000) -> pa.Table:
    times = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
    return make_trade_batch(
        exchange="binance",
        symbol="BTCUSDT",
        trade_id=[str(i) for i in range(n)],
        price=np.full(n, 100.5),
        amount=np.full(n, 0.25),
        side=["buy", "sell"] * (n // 2),
        event_time=times,
        source="f.csv",
        source_offset=np.arange(n),
    )


def values_and_coders():
    batch = a_batch()
    times = batch.column("event_time").cast(pa.int64()).to_numpy()
    chunk = next(chunks_of(batch, times // MINUTE * MINUTE, ("binance", "BTCUSDT")))
    lines = RawBatch(source="f.csv", payloads=[b"1,2,3"] * 1000, line_numbers=np.arange(1, 1001))
    rows = RawBatch(source="f.parquet", table=batch)
    return [(batch, ArrowTableCoder()), (chunk, TradeChunkCoder()), (lines, RawBatchCoder()), (rows, RawBatchCoder())]


@pytest.mark.parametrize("value,coder", values_and_coders(), ids=["table", "chunk", "raw lines", "raw rows"])
def test_a_value_round_trips_and_is_sized_without_encoding(value, coder, monkeypatch):
    decoded = coder.decode(coder.encode(value))
    assert type(decoded) is type(value)
    assert pickle.dumps(decoded) == pickle.dumps(value)
    encoded_size = len(coder.encode(value))

    def no_encoding(*args, **kwargs):
        raise AssertionError("estimating a size must not encode")

    monkeypatch.setattr(pickle, "dumps", no_encoding)
    estimate = coder.get_impl().estimate_size(value)
    # An estimate, not the exact length: the same order of magnitude is what the runner needs.
    assert encoded_size / 2 <= estimate <= encoded_size * 2


def test_the_batch_stages_are_typed_so_they_get_these_coders(tmp_path):
    """Untyped, they would fall back to Beam's default coder, which pickles a whole batch to size it."""
    source = SOURCES["binance-aggtrades"]
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    path.write_text("1,100.0,0.5,1,1,1704067200000,true,true\n")
    with beam.Pipeline() as pipeline:
        read = pipeline | ReadTradeFiles(source, [InputFile(str(path), path.stat().st_size)])
        parsed = read.raw | ParseTrades(parser_for(source))
        valid = parsed.trades | ValidateTrades()
        keyed = valid.valid | KeyBySymbol()
        routed = keyed | RouteTooLateAndChunk(BarSpec.of("1m"))
        coders = {
            name: beam.coders.registry.get_coder(pcollection.element_type)
            for name, pcollection in [
                ("read", read.raw),
                ("parsed", parsed.trades),
                ("valid", valid.valid),
                ("keyed", keyed),
                ("routed", routed.in_time),
            ]
        }
    assert isinstance(coders["read"], RawBatchCoder)
    assert isinstance(coders["parsed"], ArrowTableCoder) and isinstance(coders["valid"], ArrowTableCoder)
    assert isinstance(coders["keyed"].get_impl(), beam.coders.coder_impl.TupleCoderImpl)
    assert isinstance(coders["keyed"]._coders[1], ArrowTableCoder)
    assert isinstance(coders["routed"]._coders[1], TradeChunkCoder)
