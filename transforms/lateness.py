"""Route too-late data to dead letters instead of letting the runner drop it silently.

A DoFn cannot read the watermark, but an event-time timer that has fired proves the watermark
passed its timestamp. Per (exchange, symbol) a timer walks the open windows' expiries in order;
once one fires, chunks for that window or older are ``too_late``.
"""
from __future__ import annotations

import bisect

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_spec import BarSpec
from transforms.keys import BySymbol, ByWindow
from transforms.dead_letter import DEAD_LETTER_TAG, count_dead_letter, dead_letter
from transforms.trade_batch import event_time_micros, row_payload


def too_late_dead_letters(chunk, watermark_floor_us: int, expiry_us: int):
    times = event_time_micros(chunk)
    for i in range(chunk.num_rows):
        yield dead_letter(
            "too_late",
            f"window closed at {expiry_us} us (end + allowed lateness); watermark had reached {watermark_floor_us} us",
            "lateness", row_payload(chunk, i), chunk.column("source")[i].as_py(),
            chunk.column("source_offset")[i].as_py(), chunk.column("exchange")[i].as_py(),
            chunk.column("symbol")[i].as_py(), int(times[i]))


class _RouteTooLateFn(beam.DoFn):
    WATERMARK_FLOOR = ReadModifyWriteStateSpec("watermark_floor", VarIntCoder())
    OPEN_EXPIRIES = ReadModifyWriteStateSpec("open_expiries", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec):
        self._spec = spec

    def process(self, element,
                floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
                expiries_state=beam.DoFn.StateParam(OPEN_EXPIRIES),
                expiry_timer=beam.DoFn.TimerParam(EXPIRY),
                end_timer=beam.DoFn.TimerParam(END_OF_INPUT)):
        _, (window_key, chunk) = element
        expiry = self._spec.expiry_micros(window_key[2])
        floor = floor_state.read()
        if floor is not None and expiry <= floor:
            count_dead_letter("cryptobeam", "too_late", chunk.num_rows)
            for record in too_late_dead_letters(chunk, floor, expiry):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)
            return
        expiries = expiries_state.read() or []
        position = bisect.bisect_left(expiries, expiry)
        if position == len(expiries) or expiries[position] != expiry:
            expiries.insert(position, expiry)
            expiries_state.write(expiries)
        expiry_timer.set(Timestamp(micros=expiries[0]))
        end_timer.set(GlobalWindow().max_timestamp())
        yield window_key, chunk

    @on_timer(EXPIRY)
    def on_expiry(self, fired_at=beam.DoFn.TimestampParam,
                  floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
                  expiries_state=beam.DoFn.StateParam(OPEN_EXPIRIES),
                  expiry_timer=beam.DoFn.TimerParam(EXPIRY)):
        floor = max(floor_state.read() or fired_at.micros, fired_at.micros)
        floor_state.write(floor)
        open_expiries = [e for e in (expiries_state.read() or []) if e > floor]
        expiries_state.write(open_expiries)
        if open_expiries:
            expiry_timer.set(Timestamp(micros=open_expiries[0]))
        return []

    @on_timer(END_OF_INPUT)
    def on_end_of_input(self, expiries_state=beam.DoFn.StateParam(OPEN_EXPIRIES)):
        """The watermark reached the end of time: the input is exhausted and every window
        is closed. Dropping the open expiries ends the one-timer-per-window chain at once
        instead of walking it one firing at a time."""
        expiries_state.clear()
        return []


class RouteTooLate(beam.PTransform):
    """Window chunks -> chunks still in time, and ``too_late`` dead letters for the rest."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, chunks):
        return (chunks
                | "KeyBySymbol" >> beam.Map(lambda kv: ((kv[0][0], kv[0][1]), kv)).with_output_types(BySymbol)
                | "Route" >> beam.ParDo(_RouteTooLateFn(self._spec)).with_output_types(ByWindow).with_outputs(DEAD_LETTER_TAG, main="in_time"))
