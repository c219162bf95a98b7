"""On-chain activity beside market bars, window by window: a known answer on synthetic trades and
transfers, with windows that only one side has."""

from __future__ import annotations

import apache_beam as beam

from runners.profiles import in_process_runner
from tests.support.chain_records import (
    T0_SECONDS,
    address,
    parse_table_transfers,
    raw_transfers,
    token_address,
    transfer,
)
from tests.support.helpers import COLLECTED, MINUTE, T0, Collect, parse, raw_batch
from transforms.bar_spec import BarSpec
from transforms.chain_spec import ChainSpec, Fusion, Token
from transforms.trades_to_bars import TradesToBars

USDT = token_address(0)
EXCHANGE_WALLET, USER, OTHER_USER = address(1), address(5), address(6)


def trade(i: int, second: int, price: float, amount: float = 1.0) -> dict:
    return {
        "symbol": "BTCUSDT",
        "trade_id": i,
        "price": price,
        "amount": amount,
        "side": "buy",
        "event_time": T0 + second * 1_000_000,
    }


def usdt(block: int, log_index: int, sender: str, receiver: str, whole: int) -> dict:
    return transfer(USDT, sender, receiver, whole * 10**6, block, log_index)


def run_fusion(trades: list[dict], transfers: list[dict], spec: BarSpec) -> list[dict]:
    pipeline = beam.Pipeline(runner=in_process_runner())
    inputs = {
        "trades": pipeline | "Trades" >> beam.Create([raw_batch(trades)], reshuffle=False),
        "token_transfers": pipeline | "Transfers" >> beam.Create([raw_transfers(transfers)], reshuffle=False),
    }
    results = inputs | TradesToBars(spec, parse, transfer_parser=parse_table_transfers)
    results["tables"]["chain_market_fusion"] | beam.Map(Collect("fused"))
    pipeline.run().wait_until_finish()
    return sorted(COLLECTED["fused"], key=lambda row: row["window_start"])


def test_usdt_exchange_inflow_beside_btcusdt_bars_keeps_windows_either_side_lacks():
    assert T0 == T0_SECONDS * 1_000_000
    chain = ChainSpec(
        tokens=(Token("ethereum", USDT, "USDT", 6), Token("ethereum", token_address(1), "WETH", 18)),
        labels=((EXCHANGE_WALLET, "binance"), (address(2), "binance")),
        fusions=(Fusion("USDT", "bars", "binance", "BTCUSDT"),),
    )
    spec = BarSpec.of("1m", chain=chain)
    trades = [trade(1, 10, 100.0), trade(2, 50, 101.0, 2.0), trade(3, 70, 102.0), trade(4, 200, 99.0)]
    # blocks are 12 s apart: minute m holds blocks 5m to 5m + 4
    transfers = [
        usdt(5, 0, USER, EXCHANGE_WALLET, 1000),  # minute 1: 1000 in
        usdt(6, 0, EXCHANGE_WALLET, OTHER_USER, 300),  # 300 out
        usdt(6, 1, EXCHANGE_WALLET, address(2), 5),  # internal to binance: no flow
        transfer(token_address(1), USER, EXCHANGE_WALLET, 10**18, 7, 0),  # WETH: another asset
        usdt(10, 0, USER, OTHER_USER, 7),  # minute 2: no exchange involved
        usdt(15, 0, OTHER_USER, EXCHANGE_WALLET, 50),  # minute 3
    ]
    fused = run_fusion(trades, transfers, spec)
    assert [(row["window_start"] - T0) // MINUTE for row in fused] == [0, 1, 2, 3]
    assert all(row["exchange"] == "binance" and row["symbol"] == "BTCUSDT" and row["asset"] == "USDT" for row in fused)
    minute0, minute1, minute2, minute3 = fused
    assert (minute0["has_market"], minute0["has_chain"]) == (True, False)
    assert (minute0["close"], minute0["market_volume"], minute0["market_trades"]) == (101.0, 3.0, 2)
    assert minute0["transfer_count"] is None and minute0["exchange_netflow"] is None
    assert (minute1["has_market"], minute1["has_chain"]) == (True, True)
    assert (minute1["open"], minute1["close"], minute1["transfer_count"]) == (102.0, 102.0, 3)
    assert (minute1["transfer_volume"], minute1["exchange_inflow"], minute1["exchange_outflow"]) == (
        1305.0,
        1000.0,
        300.0,
    )
    assert minute1["exchange_netflow"] == 700.0
    assert (minute2["has_market"], minute2["has_chain"]) == (False, True)
    assert minute2["close"] is None and minute2["market_trades"] is None
    assert (minute2["transfer_count"], minute2["exchange_netflow"]) == (1, 0.0)
    assert (minute3["close"], minute3["exchange_inflow"], minute3["exchange_netflow"]) == (99.0, 50.0, 50.0)
    assert all(row["pane_timing"] == "ON_TIME" and row["pane_index"] == 0 for row in fused)


def test_a_late_retraction_revises_the_fused_window_in_a_late_pane():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.utils.timestamp import Timestamp

    from tests.support.chain_records import retraction

    chain = ChainSpec(
        tokens=(Token("ethereum", USDT, "USDT", 6),),
        labels=((EXCHANGE_WALLET, "binance"),),
        fusions=(Fusion("USDT", "bars", "binance", "BTCUSDT"),),
    )
    spec = BarSpec.of("1m", allowed_lateness_seconds=600, chain=chain)
    deposit = usdt(1, 0, USER, EXCHANGE_WALLET, 1000)
    withdrawal = usdt(2, 0, EXCHANGE_WALLET, USER, 400)

    def at(micros):
        return Timestamp(micros=micros)

    def batch(kind, rows, micros):
        raw = raw_batch(rows) if kind == "trades" else raw_transfers(rows)
        return beam.window.TimestampedValue((kind, raw), at(micros))

    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([batch("trades", [trade(1, 5, 100.0)], T0 + 5_000_000)])
        .add_elements([batch("token_transfers", [deposit, withdrawal], deposit["event_time"])])
        .advance_watermark_to(at(T0 + MINUTE + 1_000_000))
        .add_elements([batch("token_transfers", [retraction(withdrawal)], withdrawal["event_time"])])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True)) as pipeline:
        tagged = pipeline | stream
        inputs = {
            kind: tagged | f"Only[{kind}]" >> beam.FlatMap(lambda e, k=kind: [e[1]] if e[0] == k else [])
            for kind in ("trades", "token_transfers")
        }
        results = inputs | TradesToBars(spec, parse, transfer_parser=parse_table_transfers)
        results["tables"]["chain_market_fusion"] | beam.Map(Collect("fused"))
    panes = sorted(COLLECTED["fused"], key=lambda row: row["pane_index"])
    on_time = [p for p in panes if p["pane_timing"] == "ON_TIME"]
    assert [(p["close"], p["exchange_netflow"], p["transfer_count"]) for p in on_time] == [(100.0, 600.0, 2)]
    newest = panes[-1]
    assert newest["pane_timing"] == "LATE" and newest["pane_index"] > on_time[0]["pane_index"]
    assert (newest["close"], newest["exchange_netflow"], newest["transfer_count"]) == (100.0, 1000.0, 1)


def test_a_consolidated_bar_gives_its_reference_price():
    from transforms.chain_market_join import _FuseWindow

    consolidated = {"window_start": 0, "price": 42000.5, "vwap": 42001.0, "volume": 3.0, "trade_count": 9}
    fields = _FuseWindow._market_fields([{**consolidated, "pane_index": 0}, {**consolidated, "pane_index": 1}])
    assert fields["has_market"] and (fields["price"], fields["close"], fields["market_trades"]) == (42000.5, None, 9)
    assert _FuseWindow._market_fields([]) == {"has_market": False}
