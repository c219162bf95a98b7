"""Consolidated bars across venues: the partitioned volume-weighted median and the judgement of
venues (deviation with hysteresis, staleness, too few constituents) against an independent
reference (``tests/consolidation_reference.py``), scenarios with known answers, and the Beam
steps in a bounded run and in a stream whose late trades revise bars."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.instruments import with_canonical_instruments
from io_connectors.raw_batch import RawBatch
from runners.profiles import in_process_runner
from tests.support import consolidation_reference as reference
from tests.support.helpers import COLLECTED, MINUTE, T0, Collect, parse
from transforms.bar_spec import BarSpec
from transforms.consolidation import (
    ConsolidationSpec,
    Judgement,
    consolidate_day,
    consolidate_window,
    id_runs_of,
    missing_id_ranges,
    reference_price,
    subset_prices,
    venue_window,
    weighted_median,
)
from transforms.interval import parse_interval
from transforms.trade_batch import TRADE_FIELDS, make_trade_batch
from transforms.trades_to_bars import TradesToBars

SPEC = ConsolidationSpec(parse_interval("1m"), sequential_id_exchanges=frozenset({"binance"}))
BAR_FIELDS = ("price", "constituents", "excluded", "coverage", "trade_count", "included_trade_count")
PRICES = st.sampled_from([99.5, 100.0, 100.0, 100.25, 101.0, 0.1 + 0.2, 0.3])
AMOUNTS = st.sampled_from([0.1, 0.2, 0.3, 0.5, 1.0, 1e-8, 2.5, 3.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(PRICES, AMOUNTS), min_size=1, max_size=40))
def test_weighted_median_is_the_reference_median(trades):
    prices = np.array([p for p, _ in trades])
    amounts = np.array([a for _, a in trades])
    assert weighted_median(prices, amounts) == reference.weighted_median(trades)


def test_at_exactly_half_the_volume_the_lower_price_is_the_median():
    assert weighted_median(np.array([101.0, 100.0]), np.array([0.5, 0.5])) == 100.0
    assert weighted_median(np.array([101.0, 100.0]), np.array([0.3, 0.1 + 0.2])) == 100.0  # 0.1 + 0.2 > 0.3
    assert weighted_median(np.array([100.0, 101.0, 102.0]), np.array([0.2, 0.1, 0.1])) == 100.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, MINUTE - 1), PRICES, AMOUNTS), min_size=1, max_size=60),
    st.sampled_from([1, 3, 12, 60]),
)
def test_the_partitioned_price_is_the_reference_price(trades, partitions):
    spec = ConsolidationSpec(parse_interval("1m"), partitions=partitions)
    times = np.array([T0 + t for t, _, _ in trades])
    venue = venue_window(
        times, np.array([p for _, p, _ in trades]), np.array([a for _, _, a in trades]), None, 0, T0, spec
    )
    expected = reference.partitioned_price([(T0 + t, p, a) for t, p, a in trades], T0, MINUTE, partitions)
    assert reference_price([venue]) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, MINUTE - 1), PRICES, AMOUNTS | st.sampled_from([1e-300, 1e-12, 1e6])
        ),
        min_size=1,
        max_size=80,
    ),
    st.sampled_from([1, 5, 12]),
)
def test_every_set_of_venues_is_priced_as_those_venues_alone(trades, partitions):
    spec = ConsolidationSpec(parse_interval("1m"), partitions=partitions)
    venues = {}
    for v in range(4):
        rows = [t for t in trades if t[0] == v]
        if rows:
            venues[f"v{v}:X"] = venue_window(
                np.array([T0 + t for _, t, _, _ in rows]),
                np.array([p for *_, p, _ in rows]),
                np.array([a for *_, a in rows]),
                None,
                0,
                T0,
                spec,
            )
    priced = subset_prices(venues)
    assert len(priced) == 2 ** len(venues) - 1
    for subset, found in priced.items():
        pooled = [(T0 + t, p, a) for v, t, p, a in trades if f"v{v}:X" in subset]
        assert found == reference.partitioned_price(pooled, T0, MINUTE, partitions), sorted(subset)


def test_missing_ids_are_the_gaps_between_runs_and_since_the_last_window():
    runs = np.concatenate([id_runs_of(np.array([5, 6, 7, 12, 13])), id_runs_of(np.array([8, 20, 21, 9]))])
    assert missing_id_ranges(runs, None) == [(10, 11), (14, 19)]
    assert missing_id_ranges(runs, 2) == [(3, 4), (10, 11), (14, 19)]
    assert missing_id_ranges(runs, 13) == [(14, 19)]
    assert missing_id_ranges(id_runs_of(np.array([3, 3, 4])), 2) == []


def _venues_of(trades: list[tuple], spec: ConsolidationSpec) -> dict:
    """Reference trade tuples -> {pair: {window start: {venue: VenueWindow}}}, each venue's trades split in
    two summaries merged, as panes and bundles split them."""
    grouped = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for venue, base, quote, trade_id, time, price, amount in trades:
        grouped[f"{base}/{spec.quote_of(quote)}"][time // MINUTE * MINUTE][venue].append(
            (time, price, amount, trade_id)
        )
    out = defaultdict(dict)
    for pair, windows in grouped.items():
        for start, venues in windows.items():
            out[pair][start] = {}
            for venue, rows in venues.items():
                parts = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
                summaries = [
                    venue_window(
                        np.array([r[0] for r in part], dtype=np.int64),
                        np.array([r[1] for r in part]),
                        np.array([r[2] for r in part]),
                        None,
                        0,
                        start,
                        spec,
                    )
                    for part in parts
                ]
                out[pair][start][venue] = summaries[0].merge(summaries[1])
    return out


def _pipeline_bars(trades: list[tuple], spec: ConsolidationSpec) -> dict:
    bars = {}
    for pair, windows in _venues_of(trades, spec).items():
        base, quote = pair.split("/")
        for start, bar, _rows, _after in consolidate_day((base, quote), windows, spec):
            bars[(pair, start)] = {k: bar[k] for k in BAR_FIELDS}
    return bars


VENUES = ("binance:BTCUSDT", "coinbase:BTC-USD", "kraken:XBT/USD", "bitstamp:btcusd")


@st.composite
def venue_trades(draw):
    """Trades of up to four venues over an hour: each venue trades around its own level, which
    may drift away and back, and may stop for a while."""
    trades = []
    for v, venue in enumerate(VENUES[: draw(st.integers(1, 4))]):
        offsets = draw(st.lists(st.sampled_from([0.0, 0.0, 0.01, -0.015, 0.03, 0.05]), min_size=6, max_size=6))
        quiet = draw(st.integers(0, 5))
        for i in range(draw(st.integers(1, 80))):
            time = draw(st.integers(0, 3600 * 1_000_000 - 1))
            if time // (600 * 1_000_000) == quiet and v:
                continue
            level = 100.0 * (1 + offsets[time // (600 * 1_000_000)])
            price = level + draw(st.sampled_from([-0.5, 0.0, 0.25, 0.5]))
            quote = "USDT" if venue.startswith("binance") else "USD"
            trades.append((venue, "BTC", quote, str(i), T0 + time, price, draw(AMOUNTS)))
    return trades


@settings(max_examples=150, deadline=None)
@given(
    venue_trades(), st.sampled_from([(), (("USDT", "USD"),)]), st.sampled_from([1, 2]), st.sampled_from([120, 300, 900])
)
def test_a_day_of_venues_is_judged_as_the_reference_judges_it(trades, equivalents, min_constituents, stale_s):
    spec = ConsolidationSpec(
        parse_interval("1m"),
        quote_equivalents=equivalents,
        min_constituents=min_constituents,
        stale_after_seconds=stale_s,
    )
    expected = reference.reference_bars(
        trades,
        MINUTE,
        min_constituents=min_constituents,
        stale_after_us=stale_s * 1_000_000,
        quote_as=dict(equivalents),
    )
    assert _pipeline_bars(trades, spec) == expected


def _window(start: int, levels: dict[str, float], ids: dict[str, list[int]] | None = None) -> dict:
    """Each venue trades at its level: two trades in each of the window's 12 partitions."""
    venues = {}
    for name, level in levels.items():
        times = np.array([start + k * 2_500_000 for k in range(24)], dtype=np.int64)
        trade_ids = np.array(list((ids or {}).get(name, range(24))), dtype=np.int64)
        venues[name] = venue_window(times, np.full(24, level), np.full(24, 0.5), trade_ids, 0, start, SPEC)
    return venues


def test_a_drifting_venue_is_excluded_and_comes_back_only_within_half_the_threshold():
    drift = [0.0, 0.05, 0.05, 0.015, 0.015, 0.005, 0.0]  # kraken's distance from the others, window by window
    windows = {
        T0 + k * MINUTE: _window(
            T0 + k * MINUTE, {"binance:BTCUSDT": 100.0, "coinbase:BTC-USD": 100.0, "kraken:XBT/USD": 100.0 * (1 + d)}
        )
        for k, d in enumerate(drift)
    }
    days = list(consolidate_day(("BTC", "USD"), windows, SPEC))
    excluded = [json.loads(bar["excluded"]) for _, bar, _, _ in days]
    assert excluded == [
        {},
        {"kraken:XBT/USD": "deviation"},
        {"kraken:XBT/USD": "deviation"},
        {"kraken:XBT/USD": "deviation"},
        {"kraken:XBT/USD": "deviation"},
        {},
        {},
    ]
    assert [bar["price"] for _, bar, _, _ in days][1:5] == [100.0] * 4  # the drifting venue never moves the price
    assert days[3][1]["constituents"] == "binance:BTCUSDT,coinbase:BTC-USD"
    quality = {row["exchange"]: row for row in days[1][2]}
    assert quality["kraken"]["exclusion_reason"] == "deviation" and quality["kraken"]["volume_share"] is None
    assert quality["kraken"]["peer_deviation_bps"] == pytest.approx(500.0)
    assert quality["binance"]["volume_share"] == pytest.approx(0.5)


def test_a_venue_that_stops_trading_is_stale_and_a_window_short_of_constituents_has_no_price():
    spec = ConsolidationSpec(parse_interval("1m"), stale_after_seconds=120, min_constituents=2)
    windows = {
        T0 + k * MINUTE: _window(
            T0 + k * MINUTE, {"binance:BTCUSDT": 100.0, **({"coinbase:BTC-USD": 100.5} if k < 2 else {})}
        )
        for k in range(5)
    }
    days = list(consolidate_day(("BTC", "USD"), windows, spec))
    assert [json.loads(bar["excluded"]) for _, bar, _, _ in days] == [
        {},
        {},
        {},
        {"coinbase:BTC-USD": "stale"},
        {"coinbase:BTC-USD": "stale"},
    ]
    assert [bar["price"] for _, bar, _, _ in days] == [
        100.0,
        100.0,
        None,
        None,
        None,
    ]  # half the volume each: the lower
    assert [bar["no_price_reason"] for _, bar, _, _ in days][2:] == ["insufficient_constituents"] * 3
    coinbase = [next(r for r in rows if r["exchange"] == "coinbase") for _, _, rows, _ in days]
    assert [r["seconds_since_last_trade"] for r in coinbase] == [2.5, 2.5, 62.5, 122.5, 182.5]
    assert [r["trade_count"] for r in coinbase] == [24, 24, 0, 0, 0]


def test_skipped_trade_ids_are_reported_for_venues_with_consecutive_ids():
    first = _window(T0, {"binance:BTCUSDT": 100.0}, {"binance:BTCUSDT": [*range(10, 20), *range(23, 37)]})
    second = _window(T0 + MINUTE, {"binance:BTCUSDT": 100.0}, {"binance:BTCUSDT": range(40, 64)})
    days = list(consolidate_day(("BTC", "USDT"), {T0: first, T0 + MINUTE: second}, SPEC))
    rows = [rows[0] for _, _, rows, _ in days]
    assert [(r["missing_trade_ids"], r["missing_trade_id_ranges"]) for r in rows] == [(3, "20-22"), (3, "37-39")]


def test_the_judgement_starts_afresh_each_day():
    drifted = _window(T0, {"a:X": 100.0, "b:X": 100.0, "c:X": 106.0})
    _, _, judged = consolidate_window(("BTC", "USD"), T0, drifted, Judgement(), SPEC)
    assert judged.deviating == frozenset({"c:X"})
    assert judged.last_trade_us and Judgement().last_trade_us == ()


# -- the Beam steps ---------------------------------------------------------------------------


def _beam_trades(seed: int) -> list[tuple]:
    """Three venues of BTC over two hours across midnight; kraken drifts 5 % for twenty minutes;
    some trades re-delivered."""
    rng = random.Random(seed)
    start = T0 + 86_400_000_000 - 3600_000_000
    trades = []
    for venue, quote in (("binance:BTCUSDT", "USDT"), ("coinbase:BTC-USD", "USD"), ("kraken:XBT/USD", "USD")):
        for i in range(150):
            time = start + rng.randrange(2 * 3600) * 1_000_000 + rng.randrange(1_000_000)
            drift = 1.05 if venue.startswith("kraken") and 1800 <= (time - start) // 1_000_000 < 3000 else 1.0
            trades.append(
                (
                    venue,
                    "BTC",
                    quote,
                    str(1000 + i),
                    time,
                    rng.choice([99.5, 100.0, 100.5]) * drift,
                    rng.choice([0.1, 0.2, 0.3, 1.0]),
                )
            )
    return trades + rng.sample(trades, 30)


def _raw(trades: list[tuple]) -> RawBatch:
    venues = [t[0].split(":", 1) for t in trades]
    table = make_trade_batch(
        exchange=[v[0] for v in venues],
        symbol=[v[1] for v in venues],
        trade_id=[t[3] for t in trades],
        price=[t[5] for t in trades],
        amount=[t[6] for t in trades],
        side="buy",
        event_time=[t[4] for t in trades],
        source="test",
    )
    return RawBatch(source="test", table=table.select(TRADE_FIELDS), first_row=1)


def _spec(lateness_s: int = 0) -> BarSpec:
    consolidation = ConsolidationSpec(parse_interval("1m"), quote_equivalents=(("USDT", "USD"),))
    return BarSpec.of("1m", allowed_lateness_seconds=lateness_s, consolidation=consolidation)


def _collect(results, prefix: str):
    results["tables"]["bars_consolidated"] | "CollectBars" >> beam.Map(Collect(f"{prefix}bars"))
    results["tables"]["quality"] | "CollectQuality" >> beam.Map(Collect(f"{prefix}quality"))
    results["dead_letters"] | "CollectDead" >> beam.Map(Collect(f"{prefix}dead"))


def _final(panes: list[dict], *identity: str) -> dict:
    newest = {}
    for pane in panes:
        key = tuple(pane[k] for k in identity)
        if key not in newest or pane["pane_index"] > newest[key]["pane_index"]:
            newest[key] = pane
    assert all(p["is_final"] for p in newest.values())
    return {
        key: {k: v for k, v in p.items() if k not in ("pane_timing", "pane_index", "is_final")}
        for key, p in newest.items()
    }


def _batch(trades: list[tuple], spec: BarSpec) -> tuple[dict, dict]:
    parser = with_canonical_instruments(parse)
    with beam.Pipeline(runner=in_process_runner()) as pipeline:
        batches = [_raw(trades[i : i + 70]) for i in range(0, len(trades), 70)]
        _collect(pipeline | beam.Create(batches, reshuffle=False) | TradesToBars(spec, parser), "batch_")
    return (
        _final(COLLECTED["batch_bars"], "symbol", "window_start"),
        _final(COLLECTED["batch_quality"], "exchange", "symbol", "window_start"),
    )


@pytest.mark.pipeline
def test_a_bounded_run_gives_the_reference_bars():
    trades = _beam_trades(1)
    random.Random(1).shuffle(trades)
    bars, quality = _batch(trades, _spec())
    expected = reference.reference_bars(trades, MINUTE, quote_as={"USDT": "USD"})
    assert {(b["symbol"], b["window_start"]): {k: b[k] for k in BAR_FIELDS} for b in bars.values()} == expected
    assert any(json.loads(b["excluded"]) == {"kraken:XBT/USD": "deviation"} for b in bars.values())
    assert {b["window_start"] // 86_400_000_000 for b in bars.values()} == {
        T0 // 86_400_000_000,
        T0 // 86_400_000_000 + 1,
    }
    assert sum(row["trade_count"] for row in quality.values()) == len({(t[0], t[3]) for t in trades})
    assert sum(b["duplicate_count"] for b in bars.values()) == 30
    assert COLLECTED["batch_dead"] == []


@pytest.mark.pipeline
def test_a_stream_with_late_trades_revises_bars_and_ends_with_the_bounded_bars():
    trades = _beam_trades(2)
    spec = _spec(lateness_s=600)
    expected = _batch(trades, spec)
    rng = random.Random(2)
    ordered = sorted(trades, key=lambda t: t[4])
    late = set(rng.sample(range(40, len(ordered) - 40), 20))  # each 4 minutes late: allowed, behind the watermark
    arrivals = sorted(
        (t[4] + (4 * MINUTE if k in late else rng.randrange(2000) * 1000), t) for k, t in enumerate(ordered)
    )
    stream, watermark = TestStream(), 0
    for k in range(0, len(arrivals), 20):
        group = arrivals[k : k + 20]
        stream = stream.add_elements(
            [beam.window.TimestampedValue(_raw([t]), Timestamp(micros=t[4])) for _, t in group]
        )
        if group[-1][0] - 3_000_000 > watermark:
            watermark = (group[-1][0] - 3_000_000) // 1000 * 1000  # TestStream keeps whole milliseconds
            stream = stream.advance_watermark_to(Timestamp(micros=watermark))
    stream = stream.advance_watermark_to_infinity()
    parser = with_canonical_instruments(parse)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True)) as pipeline:
        _collect(pipeline | stream | TradesToBars(spec, parser), "stream_")
    bars = COLLECTED["stream_bars"]
    assert _final(bars, "symbol", "window_start") == expected[0]
    assert _final(COLLECTED["stream_quality"], "exchange", "symbol", "window_start") == expected[1]
    assert any(b["pane_timing"] == "LATE" and b["pane_index"] > 0 for b in bars), "late trades revised some bars"
    values = defaultdict(set)
    for bar in bars:
        values[bar["window_start"]].add((bar["price"], bar["trade_count"]))
    assert any(len(v) > 1 for v in values.values())
    assert COLLECTED["stream_dead"] == []
