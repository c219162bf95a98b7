"""Gap fill follows the exchange kline convention and only fills between a symbol's first and last bar."""

from __future__ import annotations

from tests.support.helpers import MINUTE, T0, raw_batch, run_trades_to_bars
from transforms.bar_spec import BarSpec


def trade(symbol, i, minute, price):
    return {"symbol": symbol, "trade_id": i, "price": price, "amount": 1.0, "event_time": T0 + minute * MINUTE + 5}


def test_empty_intervals_get_previous_close_and_zero_volume():
    rows = [
        trade("BTCUSDT", 1, 0, 10.0),
        trade("BTCUSDT", 2, 0, 11.0),
        trade("BTCUSDT", 3, 3, 12.0),
        trade("ETHUSDT", 1, 1, 5.0),
        trade("ETHUSDT", 2, 2, 6.0),
    ]
    bars, _, counters = run_trades_to_bars([raw_batch(rows)], BarSpec.of("1m", fill_gaps=True))
    btc = sorted((b for b in bars if b["symbol"] == "BTCUSDT"), key=lambda b: b["window_start"])
    assert [((b["window_start"] - T0) // MINUTE, b["is_filled"]) for b in btc] == [
        (0, False),
        (1, True),
        (2, True),
        (3, False),
    ]
    for filled in btc[1:3]:
        assert (filled["open"], filled["high"], filled["low"], filled["close"]) == (11.0,) * 4
        assert (filled["volume"], filled["quote_volume"], filled["trade_count"], filled["vwap"]) == (0.0, 0.0, 0, None)
        assert filled["window_end"] - filled["window_start"] == MINUTE and filled["is_final"]
    eth = [b for b in bars if b["symbol"] == "ETHUSDT"]
    assert not any(b["is_filled"] for b in eth)  # nothing before the first or after the last trade
    assert counters["filled_bars"] == 2


def test_no_fill_without_the_flag():
    rows = [trade("BTCUSDT", 1, 0, 10.0), trade("BTCUSDT", 2, 5, 11.0)]
    bars, _, _ = run_trades_to_bars([raw_batch(rows)], BarSpec.of("1m"))
    assert len(bars) == 2
