"""Triggers and lateness under streaming semantics, driven by TestStream.

The TestStream feeds raw batches with chosen event times, processing-time advances and
watermark advances; the assertions are on the bar panes and dead letters that come out.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from tests.support.helpers import COLLECTED, MINUTE, T0, Collect, parse, raw_batch
from transforms.bar_spec import BarSpec
from transforms.trades_to_bars import TradesToBars


def trade(i, second, price=100.0, amount=1.0, symbol="BTCUSDT"):
    return {
        "symbol": symbol,
        "trade_id": i,
        "price": price,
        "amount": amount,
        "side": "buy",
        "event_time": T0 + second * 1_000_000,
    }


def at(us: int) -> Timestamp:
    return Timestamp(micros=us)


def run_stream(stream: TestStream, spec: BarSpec):
    options = PipelineOptions([], streaming=True)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as pipeline:
        results = pipeline | stream | TradesToBars(spec, parse)
        results["bars"] | "CollectBars" >> beam.Map(Collect("bars"))
        results["dead_letters"] | "CollectDead" >> beam.Map(Collect("dead"))
    return sorted(COLLECTED["bars"], key=lambda b: (b["window_start"], b["pane_index"])), COLLECTED["dead"]


def batch_at(rows, event_us):
    return beam.window.TimestampedValue(raw_batch(rows), at(event_us))


def test_early_on_time_and_late_panes_accumulating():
    spec = BarSpec.of("1m", early_firing_seconds=10, allowed_lateness_seconds=300, accumulation="accumulating")
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([batch_at([trade(1, 5, price=100, amount=1)], T0 + 5_000_000)])
        .advance_processing_time(11)
        .add_elements([batch_at([trade(2, 20, price=105, amount=2)], T0 + 20_000_000)])
        .advance_processing_time(11)
        .advance_watermark_to(at(T0 + MINUTE + 1_000_000))  # window [0, 1m) closes on time
        .add_elements([batch_at([trade(3, 2, price=90, amount=4)], T0 + 2_000_000)])  # late, allowed, earliest
        .advance_watermark_to_infinity()
    )
    bars, dead = run_stream(stream, spec)
    assert dead == []
    timings = [b["pane_timing"] for b in bars]
    assert timings[0] == "EARLY" and "ON_TIME" in timings and timings[-1] == "LATE"
    assert [b["pane_index"] for b in bars] == list(range(len(bars)))
    on_time = next(b for b in bars if b["pane_timing"] == "ON_TIME")
    assert (on_time["trade_count"], on_time["open"], on_time["close"], on_time["volume"]) == (2, 100, 105, 3)
    late = bars[-1]  # accumulating: the late pane is the whole bar so far; open is by event time
    assert (late["trade_count"], late["open"], late["low"], late["close"], late["volume"]) == (3, 90, 90, 105, 7)
    assert not on_time["is_final"]  # allowed lateness > 0: a later pane may still come


def test_discarding_panes_carry_only_new_trades():
    spec = BarSpec.of("1m", allowed_lateness_seconds=300, accumulation="discarding")
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([batch_at([trade(1, 5, amount=1), trade(2, 6, amount=2)], T0 + 5_000_000)])
        .advance_watermark_to(at(T0 + MINUTE + 1_000_000))
        .add_elements([batch_at([trade(3, 30, amount=4), trade(1, 5, amount=1)], T0 + 30_000_000)])
        .advance_watermark_to_infinity()
    )
    bars, dead = run_stream(stream, spec)
    assert [(b["pane_timing"], b["trade_count"], b["volume"]) for b in bars] == [("ON_TIME", 2, 3.0), ("LATE", 1, 4.0)]
    assert bars[1]["duplicate_count"] == 1  # the re-delivered trade 1 was absorbed, not counted again


def test_too_late_goes_to_dead_letters_not_silence():
    spec = BarSpec.of("1m", allowed_lateness_seconds=60)
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([batch_at([trade(1, 5, amount=1)], T0 + 5_000_000)])
        .advance_watermark_to(at(T0 + 10 * MINUTE))  # window [0, 1m) expired at 2m
        .advance_processing_time(1)
        .add_elements([batch_at([trade(2, 6, amount=2)], T0 + 6_000_000)])
        .add_elements([batch_at([trade(3, 10 * 60 + 5, amount=3)], T0 + 10 * MINUTE + 5_000_000)])
        .advance_watermark_to_infinity()
    )
    bars, dead = run_stream(stream, spec)
    assert [(d["reason"], d["stage"]) for d in dead] == [("too_late", "lateness")]
    assert '"trade_id": "2"' in dead[0]["payload_string"] and dead[0]["source"] == "test"
    assert sorted((b["window_start"] - T0) // MINUTE for b in bars) == [0, 10]
    assert sum(b["trade_count"] for b in bars if b["is_final"] or b["pane_timing"] == "ON_TIME") == 2


def test_batch_defaults_give_one_on_time_pane_per_bar_and_finalizing_marks_it_final():
    from tests.support.helpers import run_trades_to_bars
    from transforms.bars import newest_pane_final

    rows = [trade(i, i * 7) for i in range(1, 40)]
    bars, _, _ = run_trades_to_bars([raw_batch(rows[:20]), raw_batch(rows[20:])], BarSpec.of("1m"))
    assert len({b["window_start"] for b in bars}) == len(bars) == 5
    assert all(b["pane_timing"] == "ON_TIME" and b["pane_index"] == 0 for b in bars)
    assert all(b["is_final"] for b in newest_pane_final(bars))


def test_finalizing_marks_exactly_the_newest_pane_of_each_bar_final():
    """Compliant runners add a closing pane at window expiry; only the newest pane is final."""
    from transforms.bars import newest_pane_final

    on_time = {"window_start": 0, "is_filled": False, "pane_index": 0, "pane_timing": "ON_TIME", "is_final": True}
    closing = {**on_time, "pane_index": 1, "pane_timing": "LATE", "is_final": True}
    other = {**on_time, "window_start": 60, "is_final": False}
    marked = newest_pane_final([closing, other, on_time])
    assert [(b["window_start"], b["pane_index"], b["is_final"]) for b in marked] == [
        (0, 0, False),
        (0, 1, True),
        (60, 0, True),
    ]


def test_a_bounded_run_groups_bars_once_by_file_partition_with_the_newest_pane_final():
    """Every sink of a bounded run is fed from this one grouping: a partition holds all panes of
    its bars, so each bar's newest pane, and only that one, comes out final."""
    from apache_beam.testing.util import assert_that

    from beam_pipelines.outputs import FinalizeBoundedBars

    day = 86_400_000_000

    def pane(symbol, window_start, index, filled=False):
        return {
            "exchange": "binance",
            "symbol": symbol,
            "window_start": window_start,
            "is_filled": filled,
            "pane_index": index,
            "is_final": index == 0,
        }  # a runner's own flags, to be overridden

    bars = [
        pane("BTCUSDT", T0, 0),
        pane("BTCUSDT", T0, 1),
        pane("BTCUSDT", T0, 2),
        pane("BTCUSDT", T0 + MINUTE, 0),
        pane("BTCUSDT", T0 + 2 * MINUTE, 0, filled=True),
        pane("BTCUSDT", T0 + day, 0),
        pane("BTCUSDT", T0 + day, 1),
        pane("ETHUSDT", T0, 1),
        pane("ETHUSDT", T0, 0),
    ]

    def check(partitions):
        by_key = dict(partitions)
        assert len(by_key) == len(partitions) == 3  # (BTCUSDT, day 1), (BTCUSDT, day 2), (ETHUSDT, day 1)
        for (exchange, symbol, date), panes in by_key.items():
            assert all((b["exchange"], b["symbol"]) == (exchange, symbol) for b in panes)
            assert {micros_to_date(b["window_start"]) for b in panes} == {date}
        final = sorted(
            (b["symbol"], b["window_start"], b["pane_index"])
            for panes in by_key.values()
            for b in panes
            if b["is_final"]
        )
        assert final == [
            ("BTCUSDT", T0, 2),
            ("BTCUSDT", T0 + MINUTE, 0),
            ("BTCUSDT", T0 + 2 * MINUTE, 0),
            ("BTCUSDT", T0 + day, 1),
            ("ETHUSDT", T0, 1),
        ]
        assert sum(len(panes) for panes in by_key.values()) == len(bars)

    with beam.Pipeline() as pipeline:
        assert_that(pipeline | beam.Create(bars) | FinalizeBoundedBars(), check)


def micros_to_date(micros: int) -> str:
    from transforms.event_time import micros_to_datetime

    return micros_to_datetime(micros).date().isoformat()
