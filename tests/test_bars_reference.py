"""Bars equal an independent duckdb computation, whatever the order, batching and duplication of input."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.helpers import MINUTE, T0, bar_key, raw_batch, reference_bars, run_trades_to_bars
from transforms.bar_spec import BarSpec

FIELDS = ["open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "sell_volume"]

trade = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT"]),
        "exchange": st.sampled_from(["binance", "coinbase"]),
        "trade_id": st.integers(1, 400),
        "price": st.floats(0.0001, 1e6, allow_nan=False, allow_infinity=False),
        "amount": st.floats(1e-8, 1e4, allow_nan=False, allow_infinity=False),
        "side": st.sampled_from(["buy", "sell", "unknown"]),
        # Several trades per millisecond, so ties in event time are common and ids must break them.
        "event_time": st.integers(0, 12 * MINUTE // 1000).map(lambda ms: T0 + ms * 1000),
    }
)


def consistent(trades: list[dict]) -> list[dict]:
    """Make each (exchange, symbol, trade_id) one trade: re-deliveries are exact copies."""
    first = {}
    for t in trades:
        first.setdefault((t["exchange"], t["symbol"], t["trade_id"]), t)
    return [first[(t["exchange"], t["symbol"], t["trade_id"])] for t in trades]


def assert_bars_equal(ours: list[dict], reference: list[dict], interval_us: int = MINUTE):
    ours_by_key = {bar_key(b): b for b in ours}
    assert len(ours_by_key) == len(ours), "one bar per key in batch mode"
    assert sorted(ours_by_key) == sorted(bar_key(r) for r in reference)
    for expected in reference:
        bar = ours_by_key[bar_key(expected)]
        assert bar["trade_count"] == expected["trade_count"]
        assert bar["first_trade_id"] == expected["first_trade_id"]
        assert bar["last_trade_id"] == expected["last_trade_id"]
        for field in FIELDS:
            assert math.isclose(bar[field], expected[field], rel_tol=1e-12, abs_tol=1e-300), field
        assert math.isclose(bar["vwap"], expected["quote_volume"] / expected["volume"], rel_tol=1e-12)
        assert bar["window_end"] - bar["window_start"] == interval_us
        assert bar["pane_timing"] == "ON_TIME" and bar["pane_index"] == 0  # one pane per bar in batch
        assert not bar["is_filled"]


@settings(max_examples=15)
@given(st.lists(trade, min_size=1, max_size=150), st.randoms(use_true_random=False), st.integers(1, 5))
def test_bars_match_duckdb_under_disorder_and_duplicates(trades, rng: random.Random, n_batches):
    trades = consistent(trades)
    delivered = trades + rng.sample(trades, k=len(trades) // 3)  # re-deliveries
    rng.shuffle(delivered)  # arrival order is not event order
    cuts = sorted(rng.sample(range(1, len(delivered)), k=min(n_batches - 1, len(delivered) - 1)))
    batches = [delivered[a:b] for a, b in zip([0] + cuts, cuts + [len(delivered)])]
    bars, dead, counters = run_trades_to_bars([raw_batch(b) for b in batches if b], BarSpec.of("1m"))
    assert dead == []
    assert_bars_equal(bars, reference_bars(delivered))
    assert counters["records_in"] == len(delivered)
    assert counters["duplicates"] == len(delivered) - len(
        {(t["exchange"], t["symbol"], t["trade_id"]) for t in delivered}
    )
    assert counters["records_in"] == sum(b["trade_count"] for b in bars) + counters["duplicates"]
    assert sum(b["duplicate_count"] for b in bars) == counters["duplicates"]


@settings(max_examples=6)
@given(st.lists(trade, min_size=1, max_size=80), st.sampled_from(["1s", "5m", "1h", "1d"]))
def test_any_interval_matches_duckdb(trades, interval):
    trades = consistent(trades)
    spec = BarSpec.of(interval)
    bars, _, _ = run_trades_to_bars([raw_batch(trades)], spec)
    assert_bars_equal(bars, reference_bars(trades, spec.interval.micros), spec.interval.micros)


def test_same_bars_whatever_the_batching():
    """Batch boundaries change how sums are grouped; exact sums make the results bit-identical."""
    rng = random.Random(3)
    trades = [
        {
            "symbol": "BTCUSDT",
            "trade_id": i,
            "price": round(rng.uniform(100, 101), 2),
            "amount": rng.choice([0.1, 0.2, 0.3, 0.7, 1e-8, 12345.678]),
            "side": rng.choice(["buy", "sell"]),
            "event_time": T0 + rng.randrange(3 * MINUTE),
        }
        for i in range(600)
    ]
    one, _, _ = run_trades_to_bars([raw_batch(trades)], BarSpec.of("1m"))
    shuffled = trades[:]
    rng.shuffle(shuffled)
    many, _, _ = run_trades_to_bars([raw_batch(shuffled[i : i + 7]) for i in range(0, 600, 7)], BarSpec.of("1m"))
    assert sorted(one, key=bar_key) == sorted(many, key=bar_key)
