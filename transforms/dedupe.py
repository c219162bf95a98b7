"""Dedupe on (exchange, symbol, trade_id), across files, batches and panes.

Keyed by window: a re-delivered trade carries the same event time, so its copies always meet
in the same (exchange, symbol, window) key. A copy whose content differs from the first one
seen is not silently merged: it is dead-lettered as ``conflicting_duplicate``.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import polars as pl
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.util import ReshufflePerKey
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_spec import BarSpec
from transforms.keys import ByWindow
from transforms.dead_letter import DEAD_LETTER_TAG, count_dead_letter, dead_letter
from transforms.trade_batch import event_time_micros, row_payload, take_rows

_SEEDS = dict(seed=0x5EED)


def trade_hashes(chunk) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a hash of the trade id, and a hash of what the trade says (time, price, amount, side)."""
    frame = pl.from_arrow(chunk.select(["trade_id", "event_time", "price", "amount", "side"]))
    ids = frame.get_column("trade_id").hash(**_SEEDS).to_numpy()
    content = frame.select(["event_time", "price", "amount", "side"]).hash_rows(**_SEEDS).to_numpy()
    return ids, content


def classify(ids, content, seen_ids, seen_content):
    """Mark each row new, duplicate or conflicting; return them with the updated seen set."""
    n = len(ids)
    unique_ids, first_row, inverse = np.unique(ids, return_index=True, return_inverse=True)
    first_of_row = first_row[inverse]
    repeat = np.arange(n) != first_of_row
    duplicate = repeat & (content == content[first_of_row])
    conflict = repeat & ~duplicate
    position = np.searchsorted(seen_ids, unique_ids)
    clipped = np.minimum(position, max(len(seen_ids) - 1, 0))
    found = (position < len(seen_ids)) & (seen_ids[clipped] == unique_ids) if len(seen_ids) else np.zeros(len(unique_ids), bool)
    same = found & (seen_content[clipped] == content[first_row]) if len(seen_ids) else found
    duplicate[first_row[same]] = True
    conflict[first_row[found & ~same]] = True
    new = ~(duplicate | conflict)
    # A later copy of an id whose first copy was itself a known duplicate is still a duplicate.
    fresh = ~found
    merged_ids = np.concatenate([seen_ids, unique_ids[fresh]])
    merged_content = np.concatenate([seen_content, content[first_row[fresh]]])
    order = np.argsort(merged_ids, kind="stable")
    return new, duplicate, conflict, merged_ids[order], merged_content[order]


class _DedupeFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec):
        self._spec = spec
        self._duplicates = beam.metrics.Metrics.counter("cryptobeam", "duplicates")
        self._unique = beam.metrics.Metrics.counter("cryptobeam", "unique_trades")

    def process(self, element, seen_state=beam.DoFn.StateParam(SEEN), expiry_timer=beam.DoFn.TimerParam(EXPIRY)):
        window_key, chunk = element
        seen = seen_state.read()
        empty = np.zeros(0, np.uint64)
        seen_ids, seen_content = seen if seen is not None else (empty, empty)
        ids, content = trade_hashes(chunk)
        new, duplicate, conflict, seen_ids, seen_content = classify(ids, content, seen_ids, seen_content)
        seen_state.write((seen_ids, seen_content))
        expiry_timer.set(Timestamp(micros=self._spec.expiry_micros(window_key[2]) + self._spec.runner_slack_micros))
        n_duplicates = int(duplicate.sum())
        self._duplicates.inc(n_duplicates)
        self._unique.inc(int(new.sum()))
        if conflict.any():
            times = event_time_micros(chunk)
            count_dead_letter("cryptobeam", "conflicting_duplicate", int(conflict.sum()))
            for i in np.flatnonzero(conflict).tolist():
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
                    "conflicting_duplicate", "same trade id as an earlier trade, but different time, price, amount or side",
                    "dedupe", row_payload(chunk, i), chunk.column("source")[i].as_py(),
                    chunk.column("source_offset")[i].as_py(), window_key[0], window_key[1], int(times[i])))
        kept = chunk if new.all() else take_rows(chunk, new)
        if kept.num_rows or n_duplicates:
            yield window_key, (kept, n_duplicates)

    @on_timer(EXPIRY)
    def on_expiry(self, seen_state=beam.DoFn.StateParam(SEEN)):
        seen_state.clear()
        return []


class DedupeTrades(beam.PTransform):
    """Window chunks -> (window key, (unique trades, duplicates absorbed)) and dead letters."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, chunks):
        # An explicit keyed shuffle before this stateful stage: its key differs from the
        # stateful stage before it, and runners must not fuse the two (FnApiRunner mixes up
        # their timers if they share a stage).
        return (chunks
                | "GroupByWindowKey" >> ReshufflePerKey().with_output_types(ByWindow)
                | "Dedupe" >> beam.ParDo(_DedupeFn(self._spec)).with_output_types(ByWindow).with_outputs(
                    DEAD_LETTER_TAG, main="unique"))
