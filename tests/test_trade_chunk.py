"""Chunks and partial bars cross every shuffle pickled: what arrives must be what was sent."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.partial_bar import partial_bar
from transforms.trade_batch import make_trade_batch
from transforms.trade_chunk import TradeChunk, chunks_of

MINUTE = 60_000_000

trade = st.tuples(
    st.text(min_size=1, max_size=12),  # trade id: any length, any script
    st.integers(0, 3 * MINUTE - 1),  # event time: up to three windows
    st.floats(1e-8, 1e6),
    st.floats(1e-8, 1e3),
    st.sampled_from(["buy", "sell", "unknown"]),
    st.one_of(st.none(), st.integers(0, 10 * MINUTE)),  # receive time, often unknown
    st.one_of(st.none(), st.integers(0, 2**40)),  # source offset
)


def chunks_from(trades, with_receive_times: bool):
    ids, times, prices, amounts, sides, receives, offsets = map(list, zip(*trades))
    batch = make_trade_batch(
        exchange="binance",
        symbol="BTCUSDT",
        base="BTC",
        quote="USDT",
        trade_id=ids,
        price=prices,
        amount=amounts,
        side=sides,
        event_time=times,
        receive_time=receives if with_receive_times else None,
        source=[f"file-{t % 2}" for t in times],
        source_offset=offsets,
    )
    starts = np.asarray(times, dtype=np.int64) // MINUTE * MINUTE
    return list(chunks_of(batch, starts, ("binance", "BTCUSDT")))


def assert_same_chunk(sent: TradeChunk, received: TradeChunk):
    for field in dataclasses.fields(TradeChunk):
        a, b = getattr(sent, field.name), getattr(received, field.name)
        if isinstance(a, np.ndarray):
            assert b.dtype == a.dtype and np.array_equal(a, b), field.name
        else:
            assert a == b, field.name


@settings(max_examples=150, deadline=None)
@given(st.lists(trade, min_size=1, max_size=60), st.booleans())
def test_a_pickled_chunk_arrives_whole(trades, with_receive_times):
    for chunk in chunks_from(trades, with_receive_times):
        received = pickle.loads(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
        assert_same_chunk(chunk, received)
        # What a received chunk is used for still works: ids, sources, offsets, subsets, summaries.
        assert [received.trade_id(i) for i in range(len(received))] == [chunk.trade_id(i) for i in range(len(chunk))]
        assert [received.source(i) for i in range(len(received))] == [chunk.source(i) for i in range(len(chunk))]
        assert [received.offset(i) for i in range(len(received))] == [chunk.offset(i) for i in range(len(chunk))]
        rows = np.arange(len(received)) % 2 == 0
        assert_same_chunk(chunk.take(rows), received.take(rows))
        assert partial_bar(received) == partial_bar(chunk)
        assert pickle.loads(pickle.dumps(chunk.summary)) == chunk.summary


def test_an_empty_subset_pickles_too():
    [chunk] = chunks_from([("1", 5, 1.0, 2.0, "buy", None, None)], with_receive_times=False)
    empty = chunk.take(np.zeros(1, dtype=bool))
    assert_same_chunk(empty, pickle.loads(pickle.dumps(empty)))
    assert pickle.loads(pickle.dumps(partial_bar(empty))) == partial_bar(empty)
