"""Dedupe on a record's identity (for trades: exchange, symbol, trade_id), across files, batches and panes.

Keyed by window: a re-delivered trade carries the same event time, so its copies always meet
in the same (exchange, symbol, window start) key. A copy whose content differs from the first one
seen is not silently merged: it is dead-lettered as ``conflicting_duplicate``.

The state lives in the global window, cleared by the step's own event-time timer when the
window expires for the runner (end + allowed lateness + slack), and the records are windowed
after it. Inside the bars' fixed windows, a runner gives a stateful step a cleanup timer per
(key, window) that holds the step's output watermark at the window's end until that expiry
(Beam's Flink runner does): every window downstream would then close only after the allowed
lateness, however early the watermark passed its end.

What comes out is the window's new records, as a chunk, with how many copies were dropped:
every computation (time bars, information bars) starts from these.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter
from transforms.dead_letter_counts import count_dead_letter
from transforms.keys import ByWindow


class UniqueRecords(NamedTuple):
    """The records of a chunk not seen before in their window, and how many re-delivered copies
    the chunk held. A chunk with nothing removed keeps the summary computed with it in bulk."""

    chunk: object
    duplicate_count: int = 0


def classify(ids, content, seen_ids, seen_content):
    """Mark each row new, duplicate or conflicting; return them with what the seen set gains.

    Every copy of an id is compared with its reference: the copy seen in an earlier chunk if
    there is one, else the first copy in this chunk (which is then the new one). The seen set
    may be in any order. Returns (new, duplicate, conflict, added ids, their content hashes).
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
    return new, duplicate, conflict, unique_ids[~found], content[first_row[~found]]


class _DedupeFn(beam.DoFn):
    """Keyed by (exchange, symbol, window start), in the global window; a key's state is cleared
    when its window expires for the runner, which then drops anything later for that window."""

    # What this window has seen, append-only: per chunk, the ids it added, then their content
    # hashes, as raw uint64 bytes. A chunk writes only what is new to the window, so a window fed
    # by many small chunks (a live stream) is not rewritten whole each time, and no write clears.
    SEEN = BagStateSpec("seen", BytesCoder())
    # Named apart from RouteTooLateAndChunk's "expiry": the in-process runner files a fused stage's timers
    # by family name, and decodes them with one transform's key coder.
    EXPIRY = TimerSpec("seen_expiry", TimeDomain.WATERMARK)

    def __init__(self, expiry_of_window, counted_as: str = ""):
        self._expiry_of_window = expiry_of_window
        self._duplicates = beam.metrics.Metrics.counter("cryptobeam", f"{counted_as}duplicates")
        self._unique = beam.metrics.Metrics.counter("cryptobeam", f"{counted_as}unique_trades")

    def process(self, element, seen_state=beam.DoFn.StateParam(SEEN), expiry_timer=beam.DoFn.TimerParam(EXPIRY)):
        window_key, chunk = element
        seen_ids, seen_content = _seen(seen_state.read())
        if not len(seen_ids):
            expiry_timer.set(Timestamp(micros=self._expiry_of_window(window_key[-1])))
        if not len(seen_ids) and chunk.distinct_ids and chunk.summary is not None:
            # The window's first chunk, known in bulk to hold no repeated id: nothing to compare.
            seen_state.add(_seen_bytes(chunk.id_hash, chunk.content_hash))
            self._duplicates.inc(0)  # Beam reports a counter only once incremented: 0 duplicates is a result
            self._unique.inc(len(chunk))
            yield window_key, UniqueRecords(chunk)
            return
        new, duplicate, conflict, added_ids, added_content = classify(
            chunk.id_hash, chunk.content_hash, seen_ids, seen_content
        )
        if len(added_ids):
            seen_state.add(_seen_bytes(added_ids, added_content))
        n_duplicates = int(duplicate.sum())
        self._duplicates.inc(n_duplicates)
        self._unique.inc(int(new.sum()))
        if conflict.any():
            count_dead_letter("cryptobeam", "conflicting_duplicate", int(conflict.sum()))
            for i in np.flatnonzero(conflict).tolist():
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER_TAG,
                    dead_letter(
                        "conflicting_duplicate",
                        "same trade id as an earlier trade, but different time, price, amount or side",
                        "dedupe",
                        chunk.trade_record(i),
                        chunk.source(i),
                        chunk.offset(i),
                        chunk.exchange,
                        chunk.symbol,
                        int(chunk.event_time[i]),
                    ),
                )
        if new.all():
            yield window_key, UniqueRecords(chunk)
        elif new.any() or n_duplicates:
            yield window_key, UniqueRecords(chunk.take(new), n_duplicates)

    @on_timer(EXPIRY)
    def on_expiry(self, seen_state=beam.DoFn.StateParam(SEEN)):
        seen_state.clear()
        return []


def _seen_bytes(ids: np.ndarray, content: np.ndarray) -> bytes:
    return np.concatenate((ids, content)).astype(np.uint64, copy=False).tobytes()


def _seen(entries) -> tuple[np.ndarray, np.ndarray]:
    """(ids, content hashes) of every entry the window's state holds."""
    ids, content = [], []
    for entry in entries:
        both = np.frombuffer(entry, np.uint64)
        half = len(both) // 2
        ids.append(both[:half])
        content.append(both[half:])
    if not ids:
        return _EMPTY, _EMPTY
    if len(ids) == 1:
        return ids[0], content[0]
    return np.concatenate(ids), np.concatenate(content)


_EMPTY = np.zeros(0, np.uint64)


class DedupeTrades(beam.PTransform):
    """Timestamped (window key, TradeChunk) in the global window -> (window key, UniqueRecords),
    and dead letters; ``expiry_of_window(window start)`` is when a window's state may go.
    ``output_hint`` types the output's key: (exchange, symbol, window start) unless the record
    type's key says otherwise."""

    def __init__(self, expiry_of_window, counted_as: str = "", output_hint=ByWindow, label=None):
        super().__init__(label)
        self._expiry_of_window, self._counted_as, self._output_hint = expiry_of_window, counted_as, output_hint

    def expand(self, chunks):
        return chunks | "Dedupe" >> beam.ParDo(_DedupeFn(self._expiry_of_window, self._counted_as)).with_output_types(
            self._output_hint
        ).with_outputs(DEAD_LETTER_TAG, main="unique")
