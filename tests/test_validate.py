"""Semantic validation: every rejection reason, and the valid rows untouched."""

from __future__ import annotations

import math

import pytest

from tests.support.helpers import T0, raw_batch, run_trades_to_bars
from transforms.bar_spec import BarSpec
from transforms.trade_batch import make_trade_batch
from transforms.validate_records import invalid_reasons


def batch(**overrides):
    row = dict(exchange="binance", symbol="BTCUSDT", trade_id="1", price=1.0, amount=1.0, side="buy", event_time=T0)
    row.update(overrides)
    return make_trade_batch(**{k: [v] for k, v in row.items()}, source="test")


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({}, ""),
        ({"price": 0.0}, "bad_price"),
        ({"price": -1.0}, "bad_price"),
        ({"price": math.nan}, "non_finite_price"),
        ({"amount": math.inf}, "non_finite_amount"),
        ({"amount": 0.0}, "bad_amount"),
        ({"side": "long"}, "unknown_side"),
        ({"event_time": 0}, "timestamp_out_of_range"),  # 1970
        ({"event_time": 7_258_118_400_000_000}, "timestamp_out_of_range"),  # 2200
        ({"symbol": ""}, "missing_symbol"),
        ({"trade_id": ""}, "missing_trade_id"),
        ({"price": 1e200, "amount": 1e81}, "notional_overflow"),
    ],
)
def test_reasons(overrides, reason):
    assert invalid_reasons(batch(**overrides), 0 + 1_230_940_800_000_000, T0 + 10**12).tolist() == [reason]


def test_invalid_rows_are_dead_letters_and_counted():
    rows = [
        {"symbol": "BTCUSDT", "trade_id": i, "price": p, "amount": 1.0, "event_time": T0 + i}
        for i, p in enumerate([1.0, -2.0, math.nan, 3.0])
    ]
    bars, dead, counters = run_trades_to_bars([raw_batch(rows)], BarSpec.of("1m"))
    assert sorted(d["reason"] for d in dead) == ["bad_price", "non_finite_price"]
    assert all(d["stage"] == "validate" and d["source"] == "test" for d in dead)
    assert {d["source_offset"] for d in dead} == {2, 3}
    assert bars[0]["trade_count"] == 2
    assert counters["records_in"] == 4 == bars[0]["trade_count"] + counters["dead_letters"]


def test_amounts_past_the_summable_range_are_dead_letters_and_bars_stay_finite():
    rows = [
        {"symbol": "BTCUSDT", "trade_id": i, "price": 1.0, "amount": a, "event_time": T0 + i}
        for i, a in enumerate([1.7e308, 1.7e308, 2.0])
    ]
    bars, dead, _ = run_trades_to_bars([raw_batch(rows)], BarSpec.of("1m"))
    assert [d["reason"] for d in dead] == ["amount_out_of_range"] * 2
    assert bars[0]["volume"] == 2.0 and bars[0]["trade_count"] == 1


def test_sides_are_lower_cased_and_a_non_ascii_look_alike_is_dead_lettered():
    """Sides are lower-cased byte-wise: any ASCII casing of buy and sell counts, and a side that
    only Unicode case folding would turn into a valid one (a Kelvin sign K in "unknown") does not."""
    sides = ["BUY", "Sell", "buy", "un\u212anown", "SELL"]
    rows = [
        {"symbol": "BTCUSDT", "trade_id": i, "price": 1.0, "amount": float(i + 1), "side": side, "event_time": T0 + i}
        for i, side in enumerate(sides)
    ]
    bars, dead, counters = run_trades_to_bars([raw_batch(rows)], BarSpec.of("1m"))
    assert [(d["reason"], d["source_offset"]) for d in dead] == [("unknown_side", 4)]
    [bar] = bars
    assert (bar["trade_count"], bar["buy_volume"], bar["sell_volume"]) == (4, 1.0 + 3.0, 2.0 + 5.0)
    assert counters["records_in"] == 5 == bar["trade_count"] + counters["dead_letters"]
