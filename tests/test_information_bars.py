"""Tick, volume and dollar bars of one day, against a plain-Python reference that walks the
trades one by one with exact (Fraction) sums; and the bar schema's evolution."""

from __future__ import annotations

import io
import math
import random
from fractions import Fraction

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import field_names, parsed_avro_schema
from transforms.bar_kinds import BarsOptionError, parse_threshold
from transforms.information_bars import day_bars
from transforms.trade_chunk import SIDE_NAMES

DAY = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def _reference(trades: list[tuple], kind: str, size: float) -> list[dict]:
    """Bars cut one trade at a time: ordered by (time, id length, id), the crossing trade in
    its bar whole, the sums exact and rounded once."""
    trades = sorted(trades, key=lambda t: (t[0], len(t[1]), t[1]))
    groups, current, total = [], [], Fraction(0)
    for trade in trades:
        time, _id, price, amount, _side = trade
        current.append(trade)
        if kind == "ticks":
            reached = len(current) >= size
        else:
            total += Fraction(amount) if kind == "volume" else Fraction(price * amount)
            reached = float(total) >= size
        if reached:
            groups.append((current, True))
            current, total = [], Fraction(0)
    if current:
        groups.append((current, False))
    bars = []
    for ordinal, (group, reached) in enumerate(groups):
        volume = float(sum(Fraction(t[3]) for t in group))
        quote = float(sum(Fraction(t[2] * t[3]) for t in group))
        bars.append(
            {
                "window_start": group[0][0],
                "window_end": group[-1][0],
                "open": group[0][2],
                "close": group[-1][2],
                "high": max(t[2] for t in group),
                "low": min(t[2] for t in group),
                "trade_count": len(group),
                "volume": volume,
                "quote_volume": quote,
                "vwap": quote / volume,
                "buy_volume": float(sum(Fraction(t[3]) for t in group if t[4] == "buy")),
                "sell_volume": float(sum(Fraction(t[3]) for t in group if t[4] == "sell")),
                "first_trade_id": group[0][1],
                "last_trade_id": group[-1][1],
                "ordinal": ordinal,
                "threshold_reached": reached,
            }
        )
    return bars


def _computed(trades: list[tuple], kind: str, size: float) -> list[dict]:
    times, ids, prices, amounts, sides = zip(*trades)
    side_codes = np.array([SIDE_NAMES.index(s) for s in sides], dtype=np.int8)
    bars = day_bars(
        "binance",
        "BTCUSDT",
        parse_threshold(kind, repr(size)),
        np.array(times, dtype=np.int64),
        np.array(prices),
        np.array(amounts),
        side_codes,
        list(ids),
    )
    return bars


_trades = st.lists(
    st.tuples(
        st.integers(0, 3_600_000_000),  # within the day's first hour, with ties in time
        st.integers(0, 10**12),
        st.sampled_from([0.1, 0.3, 1.0, 99.95, 100.0, 100.05, 1e5, 3.3333333333333335]),
        st.floats(1e-8, 1e3, allow_nan=False, allow_infinity=False),
        st.sampled_from(["buy", "sell", "unknown"]),
    ),
    min_size=1,
    max_size=120,
    unique_by=lambda t: t[1],
).map(lambda rows: [(DAY + t // 1000 * 1000, str(i), p, a, s) for t, i, p, a, s in rows])


@settings(max_examples=150, deadline=None)
@given(
    trades=_trades,
    kind=st.sampled_from(["ticks", "volume", "dollar"]),
    size=st.sampled_from([1, 2, 7, 50]),
    scale=st.sampled_from([0.01, 1.0, 100.0]),
    seed=st.integers(0, 2**16),
)
def test_bars_equal_the_one_by_one_reference_in_any_arrival_order(trades, kind, size, scale, seed):
    size = float(size) if kind == "ticks" else size * scale
    expected = _reference(trades, kind, size)
    shuffled = list(trades)
    random.Random(seed).shuffle(shuffled)
    bars = _computed(shuffled, kind, size)
    picked = [{k: bar[k] for k in expected[0]} for bar in bars]
    assert picked == expected
    assert {bar["day"] for bar in bars} == {"2024-01-01"}
    assert all(bar["interval"] == parse_threshold(kind, repr(size)).text for bar in bars)
    assert sum(bar["trade_count"] for bar in bars) == len(trades)


def test_a_bar_reaches_its_threshold_at_the_crossing_trade_and_carries_nothing_over():
    trades = [(DAY + i, str(i), 100.0, amount, "buy") for i, amount in enumerate([0.4, 0.4, 0.4, 0.1, 0.5, 0.2])]
    bars = _computed(trades, "volume", 1.0)
    # 0.4 + 0.4 is short of 1; the third 0.4 crosses it and closes the bar; the rest (0.8) is the
    # day's last bar, short of its threshold.
    assert [(b["trade_count"], b["volume"], b["threshold_reached"]) for b in bars] == [
        (3, math.fsum([0.4] * 3), True),
        (3, math.fsum([0.1, 0.5, 0.2]), False),
    ]


@pytest.mark.parametrize(
    "kind, size, error",
    [
        ("ticks", "1.5", "whole number"),
        ("ticks", "0", "positive"),
        ("volume", "-1", "positive number"),
        ("dollar", "inf", "positive number"),
        ("dollar", "1e400", "finite"),
        ("range", "5", "unknown bar kind"),
        ("volume", "", "positive number"),
    ],
)
def test_bad_thresholds_are_one_clear_error(kind, size, error):
    with pytest.raises(BarsOptionError, match=error):
        parse_threshold(kind, size)


def test_threshold_names_its_bars_and_table():
    assert parse_threshold("dollar", "1e6").text == "dollar:1000000"
    assert parse_threshold("volume", "0.5").text == "volume:0.5"
    assert parse_threshold("ticks", "1000").table == "bars_ticks"


def _avro_round_trip(records, writer_schema, reader_schema):
    buffer = io.BytesIO()
    fastavro.writer(buffer, writer_schema, records)
    buffer.seek(0)
    return list(fastavro.reader(buffer, reader_schema))


def test_a_reader_of_the_old_bar_schema_reads_information_bars_and_the_new_reads_old_bars():
    trades = [(DAY + i * 1000, str(i), 100.0 + i, 1.0, "sell") for i in range(5)]
    bars = [
        {**bar, "pane_timing": "ON_TIME", "pane_index": 0, "is_final": True, "duplicate_count": 0}
        for bar in _computed(trades, "ticks", 2)
    ]
    assert set(bars[0]) == set(field_names("information_bar"))
    as_old = _avro_round_trip(bars, parsed_avro_schema("information_bar"), parsed_avro_schema("bar"))
    old_fields = field_names("bar")
    written_as_old = [{k: bar[k] for k in old_fields} for bar in bars]
    assert as_old == _avro_round_trip(written_as_old, parsed_avro_schema("bar"), parsed_avro_schema("bar"))
    as_new = _avro_round_trip(as_old, parsed_avro_schema("bar"), parsed_avro_schema("information_bar"))
    assert [{k: bar[k] for k in old_fields} for bar in as_new] == as_old
    assert {(bar["day"], bar["ordinal"], bar["threshold_reached"]) for bar in as_new} == {(None, None, None)}


@pytest.mark.parametrize(
    "amounts, size",
    [([0.1, 0.2, 0.3, 0.5], 0.6000000000000001), ([0.3, 0.2, 0.1], 0.6), ([1e16, 1.0, -0.0 + 1.0, 3.0], 1e16 + 4)],
)
def test_the_threshold_is_met_by_the_correctly_rounded_sum_not_by_a_running_float_sum(amounts, size):
    """(0.1 + 0.2) + 0.3 is 0.6000000000000001 in floats; the amounts' exact sum rounds to 0.6."""
    trades = [(DAY + i, str(i), 1.0, amount, "buy") for i, amount in enumerate(amounts)]
    assert _computed(trades, "volume", size) == _computed(list(reversed(trades)), "volume", size)
    computed = _computed(trades, "volume", size)
    assert [{k: bar[k] for k in ("trade_count", "threshold_reached", "volume")} for bar in computed] == [
        {k: bar[k] for k in ("trade_count", "threshold_reached", "volume")}
        for bar in _reference(trades, "volume", size)
    ]
