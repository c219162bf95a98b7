"""Bars follow Binance's kline definition, checked on a hand-computed example.

A kline covers [open time, open time + interval); open/close are the first/last trades by time
(then by id); volume is base quantity; quote volume is sum(price * qty); taker buy volume counts
trades whose buyer was the taker (is_buyer_maker = false); empty intervals repeat the last close.
"""

from __future__ import annotations

import zipfile

import pyarrow.parquet as pq
import pytest

from beam_pipelines.cli import main

MINUTE_MS = 60_000
T = 1570752000000  # 2019-10-11T00:00:00Z

AGG_TRADES = [
    # id, price, qty, first, last, time(ms), buyer_is_maker
    (10, "0.00152300", "100", 20, 20, T + 1_000, "True"),
    (12, "0.00152500", "50", 23, 23, T + 30_000, "False"),
    (11, "0.00152100", "25", 21, 22, T + 30_000, "True"),  # same ms as id 12: id 11 comes first
    (13, "0.00152900", "10", 24, 24, T + 59_999, "False"),  # last ms of the first minute
    (14, "0.00153000", "5", 25, 25, T + 3 * MINUTE_MS, "True"),  # minutes 1 and 2 are empty
]

# Hand-computed like the exchange's klines (open, high, low, close, volume, quote volume, trades, taker buy base).
EXPECTED = {
    0: ("0.00152300", "0.00152900", "0.00152100", "0.00152900", 185.0, 0.281865, 4, 60.0),
    1: ("0.00152900", "0.00152900", "0.00152900", "0.00152900", 0.0, 0.0, 0, 0.0),
    2: ("0.00152900", "0.00152900", "0.00152900", "0.00152900", 0.0, 0.0, 0, 0.0),
    3: ("0.00153000", "0.00153000", "0.00153000", "0.00153000", 5.0, 0.00765, 1, 0.0),
}


@pytest.mark.pipeline
def test_bars_equal_binance_klines(tmp_path):
    archive = tmp_path / "XRPETH-aggTrades-2019-10-11.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "XRPETH-aggTrades-2019-10-11.csv",
            "\n".join(",".join(map(str, (*row, "True"))) for row in AGG_TRADES) + "\n",
        )
    out = tmp_path / "out"
    assert (
        main(
            [
                "backfill",
                "--source",
                "binance-aggtrades",
                "--input",
                str(archive),
                "--interval",
                "1m",
                "--fill-gaps",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    bars = sorted(pq.read_table(out / "bars").to_pylist(), key=lambda b: b["window_start"])
    assert len(bars) == 4 and {(b["exchange"], b["symbol"]) for b in bars} == {("binance", "XRPETH")}
    for minute, bar in enumerate(bars):
        o, h, lo, c, volume, quote_volume, count, taker_buy = EXPECTED[minute]
        assert bar["window_start"].timestamp() * 1000 == T + minute * MINUTE_MS
        assert (f"{bar['open']:.8f}", f"{bar['high']:.8f}", f"{bar['low']:.8f}", f"{bar['close']:.8f}") == (o, h, lo, c)
        assert f"{bar['volume']:.8f}" == f"{volume:.8f}" and f"{bar['quote_volume']:.8f}" == f"{quote_volume:.8f}"
        assert bar["trade_count"] == count and f"{bar['buy_volume']:.8f}" == f"{taker_buy:.8f}"
        assert bar["is_filled"] == (count == 0)
    assert (bars[0]["first_trade_id"], bars[0]["last_trade_id"]) == ("10", "13")
