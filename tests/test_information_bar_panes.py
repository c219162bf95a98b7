"""Information bars through the whole chain (parse, skeleton, release by the watermark): a bounded
run and a shuffled stream with late trades give the same final bars, and those are the day's
bars cut from the deduplicated trades by an independent reference."""

from __future__ import annotations

import random
from collections import defaultdict
from fractions import Fraction

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from runners.profiles import in_process_runner
from tests.support.helpers import COLLECTED, MINUTE, T0, Collect, parse, raw_batch
from transforms.bar_kinds import parse_threshold
from transforms.bar_spec import BarSpec
from transforms.trades_to_bars import TradesToBars

DAY = 86_400_000_000
THRESHOLDS = (parse_threshold("ticks", "7"), parse_threshold("volume", "5"), parse_threshold("dollar", "900"))
VALUE_FIELDS = (
    "window_start",
    "window_end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "buy_volume",
    "sell_volume",
    "first_trade_id",
    "last_trade_id",
    "duplicate_count",
    "day",
    "ordinal",
    "threshold_reached",
)


def _trades(seed: int, n: int = 400) -> list[dict]:
    """Two symbols over the last hours of one day and the first of the next; some re-delivered."""
    rng = random.Random(seed)
    trades = []
    for i in range(n):
        trades.append(
            {
                "symbol": rng.choice(["BTCUSDT", "ETHUSDT"]),
                "trade_id": i,
                "price": rng.choice([99.5, 100.0, 100.25, 101.0]),
                "amount": rng.choice([0.1, 0.25, 1.0, 2.5]),
                "side": rng.choice(["buy", "sell"]),
                "event_time": T0 + DAY - 3 * 3600_000_000 + rng.randrange(4 * 3600) * 1_000_000,
            }
        )
    return trades + [dict(t) for t in rng.sample(trades, 20)]


def _reference(trades: list[dict], threshold) -> dict:
    """Final bars by (symbol, day, ordinal): unique trades ordered by (time, id), cut one at a time;
    each minute's re-delivered copies carried by the bar holding that minute's last trade."""
    unique = {(t["symbol"], str(t["trade_id"])): t for t in trades}
    copies = defaultdict(int)
    for t in trades:
        copies[(t["symbol"], t["event_time"] // MINUTE)] += 1
    for t in unique.values():
        copies[(t["symbol"], t["event_time"] // MINUTE)] -= 1
    by_day = defaultdict(list)
    for (symbol, trade_id), t in unique.items():
        by_day[(symbol, t["event_time"] // DAY)].append((t["event_time"], trade_id, t["price"], t["amount"], t["side"]))
    bars = {}
    for (symbol, day), day_trades in by_day.items():
        day_trades.sort(key=lambda t: (t[0], len(t[1]), t[1]))
        groups, current, total = [], [], Fraction(0)
        for trade in day_trades:
            current.append(trade)
            total += Fraction(trade[3]) if threshold.kind == "volume" else Fraction(trade[2] * trade[3])
            if (len(current) if threshold.kind == "ticks" else float(total)) >= threshold.size:
                groups.append(current)
                current, total = [], Fraction(0)
        groups += [current] if current else []
        last_of_minute = {t[0] // MINUTE: ordinal for ordinal, group in enumerate(groups) for t in group}
        for ordinal, group in enumerate(groups):
            carried = sum(copies[(symbol, minute)] for minute, holder in last_of_minute.items() if holder == ordinal)
            bars[(symbol, ordinal, day)] = (
                len(group),
                group[0][1],
                group[-1][1],
                float(sum(Fraction(t[3]) for t in group)),
                carried,
            )
    return bars


def _final(bars: list[dict]) -> dict:
    """The newest pane of each bar, which must be the one marked final."""
    newest = {}
    for bar in bars:
        key = (bar["symbol"], bar["day"], bar["ordinal"])
        if key not in newest or bar["pane_index"] > newest[key]["pane_index"]:
            newest[key] = bar
    assert all(bar["is_final"] for bar in newest.values())
    return {key: {k: bar[k] for k in VALUE_FIELDS} for key, bar in newest.items()}


def _as_reference(final: dict) -> dict:
    from datetime import date

    return {
        (symbol, ordinal, (date.fromisoformat(day) - date(1970, 1, 1)).days): (
            bar["trade_count"],
            bar["first_trade_id"],
            bar["last_trade_id"],
            bar["volume"],
            bar["duplicate_count"],
        )
        for (symbol, day, ordinal), bar in final.items()
    }


def _collect(results, prefix: str):
    for threshold in THRESHOLDS:
        results["tables"][threshold.table] | f"Collect{threshold.kind}" >> beam.Map(
            Collect(f"{prefix}{threshold.kind}")
        )
    results["dead_letters"] | "CollectDead" >> beam.Map(Collect(f"{prefix}dead"))


def _batch(trades: list[dict], spec: BarSpec) -> dict:
    with beam.Pipeline(runner=in_process_runner()) as pipeline:
        results = (
            pipeline
            | beam.Create([raw_batch(trades[i : i + 50]) for i in range(0, len(trades), 50)], reshuffle=False)
            | TradesToBars(spec, parse)
        )
        _collect(results, "batch_")
    return {t.kind: list(COLLECTED[f"batch_{t.kind}"]) for t in THRESHOLDS}


def _spec(lateness_s: int = 0) -> BarSpec:
    return BarSpec.of("1m", allowed_lateness_seconds=lateness_s, time_bars=False, thresholds=THRESHOLDS)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_bounded_run_gives_the_reference_bars(seed):
    trades = _trades(seed)
    random.Random(seed).shuffle(trades)
    bars = _batch(trades, _spec())
    assert COLLECTED["batch_dead"] == []
    for threshold in THRESHOLDS:
        final = _final(bars[threshold.kind])
        assert _as_reference(final) == _reference(trades, threshold)
        assert {bar["interval"] for bar in bars[threshold.kind]} == {threshold.text}


def test_a_shuffled_stream_with_late_trades_revises_and_ends_with_the_bounded_bars():
    trades = _trades(3)
    spec = _spec(lateness_s=600)
    expected = {kind: _final(bars) for kind, bars in _batch(trades, spec).items()}
    rng = random.Random(3)
    ordered = sorted(trades, key=lambda t: t["event_time"])
    late = rng.sample(ordered[50:-50], 25)  # each arrives 5 minutes after its time: allowed, behind the watermark
    on_time = [t for t in ordered if not any(t is x for x in late)]
    arrivals = [(t["event_time"] + rng.randrange(3000) * 1000, t) for t in on_time] + [
        (t["event_time"] + 5 * MINUTE, t) for t in late
    ]
    arrivals.sort(key=lambda a: a[0])
    too_late = {**ordered[10], "trade_id": 10_000, "price": 1.0}
    stream, watermark = TestStream(), 0
    for k in range(0, len(arrivals), 15):
        group = arrivals[k : k + 15]
        stream = stream.add_elements(
            [beam.window.TimestampedValue(raw_batch([t]), Timestamp(micros=t["event_time"])) for _, t in group]
        )
        if group[-1][0] - 5_000_000 > watermark:
            watermark = group[-1][0] - 5_000_000
            stream = stream.advance_watermark_to(Timestamp(micros=watermark))
    # An hour after the last arrival: the early trade below is long past its window's expiry.
    stream = (
        stream.advance_watermark_to(Timestamp(micros=watermark + 3600_000_000))
        .add_elements([beam.window.TimestampedValue(raw_batch([too_late]), Timestamp(micros=too_late["event_time"]))])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True)) as pipeline:
        _collect(pipeline | stream | TradesToBars(spec, parse), "stream_")
    for threshold in THRESHOLDS:
        panes = COLLECTED[f"stream_{threshold.kind}"]
        assert _final(panes) == expected[threshold.kind], threshold.kind
        versions = defaultdict(set)
        for pane in panes:
            versions[(pane["symbol"], pane["day"], pane["ordinal"])].add(tuple(pane[k] for k in VALUE_FIELDS))
        assert any(len(v) > 1 for v in versions.values()), "late trades revised some bars"
    assert [d["reason"] for d in COLLECTED["stream_dead"]] == ["too_late"]
