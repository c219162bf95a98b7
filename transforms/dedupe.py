"""Dedupe on (exchange, symbol, trade_id), across files, batches and panes.

Keyed by window: a re-delivered trade carries the same event time, so its copies always meet
in the same (exchange, symbol, window) key. A copy whose content differs from the first one
seen is not silently merged: it is dead-lettered as ``conflicting_duplicate``.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from transforms.keys import ByWindow
from transforms.partial_bar import partial_bar
from transforms.dead_letter import DEAD_LETTER_TAG, count_dead_letter, dead_letter

def classify(ids, content, seen_ids, seen_content):
    """Mark each row new, duplicate or conflicting; return them with the updated seen set.

    Every copy of an id is compared with its reference: the copy seen in an earlier chunk if
    there is one, else the first copy in this chunk (which is then the new one). The seen set
    may be in any order.
    """
    n = len(ids)
    unique_ids, first_row, inverse = np.unique(ids, return_index=True, return_inverse=True)
    if len(seen_ids):
        order = np.argsort(seen_ids, kind="stable")
        seen_ids, seen_content = seen_ids[order], seen_content[order]
        position = np.minimum(np.searchsorted(seen_ids, unique_ids), len(seen_ids) - 1)
        found = seen_ids[position] == unique_ids
        reference = np.where(found, seen_content[position], content[first_row])
    else:
        found = np.zeros(len(unique_ids), dtype=bool)
        reference = content[first_row]
    new = np.zeros(n, dtype=bool)
    new[first_row[~found]] = True
    same = content == reference[inverse]
    duplicate = ~new & same
    conflict = ~new & ~same
    merged_ids = np.concatenate([seen_ids, unique_ids[~found]])
    merged_content = np.concatenate([seen_content, content[first_row[~found]]])
    return new, duplicate, conflict, merged_ids, merged_content


class _DedupeFn(beam.DoFn):
    """Keyed by (exchange, symbol, window) and run inside the window, so its state lives exactly
    as long as the window does: the runner clears it when the window expires."""

    # The trade id hashes seen in this window, then their content hashes, in one array: it pickles
    # faster than two, and is a copy, so it keeps no chunk's buffer alive.
    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())

    def __init__(self):
        self._duplicates = beam.metrics.Metrics.counter("cryptobeam", "duplicates")
        self._unique = beam.metrics.Metrics.counter("cryptobeam", "unique_trades")

    def process(self, element, seen_state=beam.DoFn.StateParam(SEEN)):
        window_key, chunk = element
        seen = seen_state.read()
        if seen is None and chunk.distinct_ids and chunk.summary is not None:
            # The window's first chunk, known in bulk to hold no repeated id: nothing to compare.
            seen_state.write(np.concatenate((chunk.id_hash, chunk.content_hash)))
            self._duplicates.inc(0)
            self._unique.inc(len(chunk))
            yield window_key, chunk.summary
            return
        seen = seen if seen is not None else np.zeros(0, np.uint64)
        half = len(seen) // 2
        new, duplicate, conflict, seen_ids, seen_content = classify(
            chunk.id_hash, chunk.content_hash, seen[:half], seen[half:])
        seen_state.write(np.concatenate((seen_ids, seen_content)))
        n_duplicates = int(duplicate.sum())
        self._duplicates.inc(n_duplicates)
        self._unique.inc(int(new.sum()))
        if conflict.any():
            count_dead_letter("cryptobeam", "conflicting_duplicate", int(conflict.sum()))
            for i in np.flatnonzero(conflict).tolist():
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
                    "conflicting_duplicate", "same trade id as an earlier trade, but different time, price, amount or side",
                    "dedupe", chunk.trade_record(i), chunk.source(i), chunk.offset(i), chunk.exchange,
                    chunk.symbol, int(chunk.event_time[i])))
        if new.all() and chunk.summary is not None:
            yield window_key, chunk.summary  # nothing removed: the summary computed in bulk stands
        elif new.any() or n_duplicates:
            yield window_key, partial_bar(chunk.take(new), n_duplicates)


class DedupeTrades(beam.PTransform):
    """Windowed (window key, TradeChunk) -> (window key, PartialBar of the unique trades), and dead letters."""

    def expand(self, chunks):
        return chunks | "Dedupe" >> beam.ParDo(_DedupeFn()).with_output_types(ByWindow).with_outputs(
            DEAD_LETTER_TAG, main="unique")
