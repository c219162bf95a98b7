"""Route too-late data to dead letters instead of letting the runner drop it silently.

A DoFn cannot read the watermark, but an event-time timer that has fired proves the watermark
passed its timestamp. Per (exchange, symbol) a timer walks the windows' expiries in order; once
one fires, trades of that window or older are ``too_late``. Work is per batch, not per window:
the expiry check is vectorized, and only the trades still in time are cut into window chunks.

Each chunk gets a Beam timestamp inside its window (its earliest trade), so Beam's own
windowing, watermarks, triggers and lateness then act on chunks exactly as they would on
single trades.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_spec import BarSpec
from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.dead_letter_counts import count_dead_letter
from transforms.record_types import record_type as registered
from transforms.trade_batch import rows_dead_letters, take_rows


def stamped_window_chunks(chunks):
    """Timestamped ((*key, window_start_us), chunk) pairs: a chunk's timestamp is its earliest record's time."""
    for key, chunk in chunks:
        yield beam.window.TimestampedValue(
            ((*key, chunk.window_start), chunk), Timestamp(micros=int(chunk.event_time.min()))
        )


def too_late_dead_letters(
    batch,
    rows,
    watermark_floor_us: int,
    expiries: np.ndarray,
    times: np.ndarray,
    dead_letters_of_rows=rows_dead_letters,
):
    rows = rows.tolist()
    messages = [
        f"window closed at {int(expiries[i])} us (end + allowed lateness); watermark had reached "
        f"{watermark_floor_us} us"
        for i in rows
    ]
    return dead_letters_of_rows(batch, rows, ["too_late"] * len(rows), messages, "lateness", times[rows].tolist())


class _RouteTooLateAndChunkFn(beam.DoFn):
    """Per (exchange, symbol), O(1) state: the watermark floor, the next expiry a timer waits
    for, and the latest expiry seen. The timer walks expiries one interval at a time (every
    window of a symbol expires on that grid) and stops once past the latest one."""

    WATERMARK_FLOOR = ReadModifyWriteStateSpec("watermark_floor", VarIntCoder())
    NEXT_EXPIRY = ReadModifyWriteStateSpec("next_expiry", VarIntCoder())
    LATEST_EXPIRY = ReadModifyWriteStateSpec("latest_expiry", VarIntCoder())
    INPUT_ENDED = ReadModifyWriteStateSpec("input_ended", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec, record_type):
        self._spec, self._record_type = spec, record_type

    def process(
        self,
        element,
        floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
        next_state=beam.DoFn.StateParam(NEXT_EXPIRY),
        latest_state=beam.DoFn.StateParam(LATEST_EXPIRY),
        expiry_timer=beam.DoFn.TimerParam(EXPIRY),
        end_timer=beam.DoFn.TimerParam(END_OF_INPUT),
    ):
        key, batch = element
        times = batch.column(self._record_type.event_time_field).cast(pa.int64()).to_numpy()
        starts = self._spec.interval.window_start_micros(times)
        expiries = starts + self._spec.interval.micros + self._spec.allowed_lateness_micros
        floor = floor_state.read()
        late = expiries <= floor if floor is not None else np.zeros(len(times), dtype=bool)
        if late.any():
            rows = np.flatnonzero(late)
            count_dead_letter("cryptobeam", "too_late", len(rows))
            for record in too_late_dead_letters(
                batch, rows, floor, expiries, times, self._record_type.rows_dead_letters
            ):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)
            keep = ~late
            batch, starts, expiries = take_rows(batch, keep), starts[keep], expiries[keep]
        if not len(starts):
            return
        earliest, latest = int(expiries.min()), int(expiries.max())
        known_latest = latest_state.read()
        if known_latest is None or latest > known_latest:
            latest_state.write(latest)
        pending = next_state.read()
        if pending is None or earliest < pending:
            next_state.write(earliest)
            expiry_timer.set(Timestamp(micros=earliest))
            end_timer.set(GlobalWindow().max_timestamp())
        yield from stamped_window_chunks((key, chunk) for chunk in self._record_type.chunks_of(batch, starts, key))

    @on_timer(EXPIRY)
    def on_expiry(
        self,
        fired_at=beam.DoFn.TimestampParam,
        floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
        next_state=beam.DoFn.StateParam(NEXT_EXPIRY),
        latest_state=beam.DoFn.StateParam(LATEST_EXPIRY),
        ended_state=beam.DoFn.StateParam(INPUT_ENDED),
        expiry_timer=beam.DoFn.TimerParam(EXPIRY),
    ):
        floor = max(floor_state.read() or fired_at.micros, fired_at.micros)
        floor_state.write(floor)
        following = floor + self._spec.interval.micros
        if ended_state.read() or following > (latest_state.read() or floor):
            next_state.clear()  # nothing open: the next chunk sets the timer again
            return []
        next_state.write(following)
        expiry_timer.set(Timestamp(micros=following))
        return []

    @on_timer(END_OF_INPUT)
    def on_end_of_input(self, ended_state=beam.DoFn.StateParam(INPUT_ENDED)):
        """The watermark reached the end of time: the input is exhausted. Stops the walk at
        once instead of stepping through every remaining interval."""
        ended_state.write(1)
        return []


class RouteTooLateAndChunk(beam.PTransform):
    """Per-key record batches -> ``too_late`` dead letters, and the rest cut into timestamped
    ((*key, window start), chunk) pairs ready for windowing."""

    def __init__(self, spec: BarSpec, record_type=None, label=None):
        super().__init__(label)
        self._spec, self._record_type = spec, record_type or registered("trade")

    def expand(self, batches_by_key):
        return batches_by_key | "Route" >> beam.ParDo(
            _RouteTooLateAndChunkFn(self._spec, self._record_type)
        ).with_output_types(self._record_type.chunk_by_window_hint).with_outputs(DEAD_LETTER_TAG, main="in_time")
