"""Dedupe classification: every copy is compared with the copy already kept."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from transforms.dedupe import _seen, _seen_bytes, classify

EMPTY = np.zeros(0, np.uint64)


def u(values):
    return np.array(values, dtype=np.uint64)


def test_repeats_compare_with_the_stored_copy():
    new, dup, conflict, seen_ids, seen_content = classify(u([7]), u([1]), EMPTY, EMPTY)
    assert new.tolist() == [True]
    assert (seen_ids.tolist(), seen_content.tolist()) == ([7], [1])
    new, dup, conflict, _, _ = classify(u([7, 7]), u([2, 1]), seen_ids, seen_content)
    assert (new.tolist(), dup.tolist(), conflict.tolist()) == ([False, False], [False, True], [True, False])


@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), max_size=12), max_size=5))
def test_matches_a_simple_dictionary_model(chunks):
    """The seen set is kept as the window's state keeps it: one entry appended per chunk."""
    entries, model = [], {}
    for chunk in chunks:
        ids, content = u([i for i, _ in chunk]), u([c for _, c in chunk])
        seen_ids, seen_content = _seen(entries)
        new, dup, conflict, added_ids, added_content = classify(ids, content, seen_ids, seen_content)
        if len(added_ids):
            entries.append(_seen_bytes(added_ids, added_content))
        for k, (i, c) in enumerate(chunk):
            expected = "new" if i not in model else ("duplicate" if model[i] == c else "conflict")
            model.setdefault(i, c)
            got = "new" if new[k] else "duplicate" if dup[k] else "conflict"
            assert got == expected
        seen_ids, seen_content = _seen(entries)
        assert sorted(zip(seen_ids.tolist(), seen_content.tolist())) == sorted(model.items())


def test_a_window_remembers_its_records_until_the_runner_expires_it():
    """In the global window, with the step's own timer: a copy is a duplicate until the window's
    runner expiry (end + allowed lateness + slack) and new after it, once the state is cleared.
    In a pipeline, RouteTooLateAndChunk dead-letters such a copy before it reaches dedupe."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.utils.timestamp import Timestamp

    from tests.support.helpers import COLLECTED, T0, Collect, parse, raw_batch
    from transforms.bar_spec import BarSpec
    from transforms.dedupe import DedupeTrades
    from transforms.record_types import record_type

    spec = BarSpec.of("1m", allowed_lateness_seconds=120)
    rows = [
        {"symbol": "BTCUSDT", "trade_id": i, "price": 100.0 + i, "amount": 1.0, "event_time": T0 + i * 1_000_000}
        for i in (1, 2)
    ]
    table, _ = parse(raw_batch(rows))
    trades = record_type("trade")
    [(key, batch)] = trades.split_by_key(table)
    [chunk] = trades.chunks_of(
        batch, spec.interval.window_start_micros(batch.column("event_time").cast("int64").to_numpy()), key
    )
    element = beam.window.TimestampedValue(((*key, T0), chunk), Timestamp(micros=T0 + 1_000_000))
    expiry = spec.runner_expiry_micros(T0)
    stream = (
        TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([element])
        .advance_watermark_to(Timestamp(micros=expiry - 1000))
        .add_elements([element])
        .advance_watermark_to(Timestamp(micros=expiry + 1000))
        .add_elements([element])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True)) as pipeline:
        unique = pipeline | stream | DedupeTrades(spec.runner_expiry_micros)
        (
            unique.unique
            | beam.MapTuple(lambda _key, records: (len(records.chunk), records.duplicate_count))
            | beam.Map(Collect("dedupe_expiry"))
        )
    assert COLLECTED["dedupe_expiry"] == [(2, 0), (0, 2), (2, 0)]
