"""Route too-late data to dead letters instead of letting the runner drop it silently.

A DoFn cannot read the watermark, but an event-time timer that has fired proves the watermark
passed its timestamp. Per (exchange, symbol) a timer walks the windows' expiries in order; once
one fires, chunks for that window or older are ``too_late``.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_spec import BarSpec
from transforms.keys import BySymbol, ByWindow
from transforms.dead_letter import DEAD_LETTER_TAG, count_dead_letter, dead_letter


def too_late_dead_letters(chunk, watermark_floor_us: int, expiry_us: int):
    for i in range(len(chunk)):
        yield dead_letter(
            "too_late",
            f"window closed at {expiry_us} us (end + allowed lateness); watermark had reached {watermark_floor_us} us",
            "lateness", chunk.trade_record(i), chunk.source(i), chunk.offset(i), chunk.exchange, chunk.symbol,
            int(chunk.event_time[i]))


class _RouteTooLateFn(beam.DoFn):
    """Per (exchange, symbol), O(1) state: the watermark floor, the next expiry a timer waits
    for, and the latest expiry seen. The timer walks expiries one interval at a time (every
    window of a symbol expires on that grid) and stops once past the latest one."""

    WATERMARK_FLOOR = ReadModifyWriteStateSpec("watermark_floor", VarIntCoder())
    NEXT_EXPIRY = ReadModifyWriteStateSpec("next_expiry", VarIntCoder())
    LATEST_EXPIRY = ReadModifyWriteStateSpec("latest_expiry", VarIntCoder())
    INPUT_ENDED = ReadModifyWriteStateSpec("input_ended", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec):
        self._spec = spec

    def process(self, element,
                floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
                next_state=beam.DoFn.StateParam(NEXT_EXPIRY),
                latest_state=beam.DoFn.StateParam(LATEST_EXPIRY),
                expiry_timer=beam.DoFn.TimerParam(EXPIRY),
                end_timer=beam.DoFn.TimerParam(END_OF_INPUT)):
        _, (window_key, chunk) = element
        expiry = self._spec.expiry_micros(window_key[2])
        floor = floor_state.read()
        if floor is not None and expiry <= floor:
            count_dead_letter("cryptobeam", "too_late", len(chunk))
            for record in too_late_dead_letters(chunk, floor, expiry):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)
            return
        latest = latest_state.read()
        if latest is None or expiry > latest:
            latest_state.write(expiry)
        pending = next_state.read()
        if pending is None or expiry < pending:
            next_state.write(expiry)
            expiry_timer.set(Timestamp(micros=expiry))
            end_timer.set(GlobalWindow().max_timestamp())
        yield window_key, chunk

    @on_timer(EXPIRY)
    def on_expiry(self, fired_at=beam.DoFn.TimestampParam,
                  floor_state=beam.DoFn.StateParam(WATERMARK_FLOOR),
                  next_state=beam.DoFn.StateParam(NEXT_EXPIRY),
                  latest_state=beam.DoFn.StateParam(LATEST_EXPIRY),
                  ended_state=beam.DoFn.StateParam(INPUT_ENDED),
                  expiry_timer=beam.DoFn.TimerParam(EXPIRY)):
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


class RouteTooLate(beam.PTransform):
    """Window chunks -> chunks still in time, and ``too_late`` dead letters for the rest."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, chunks):
        return (chunks
                | "KeyBySymbol" >> beam.Map(lambda kv: ((kv[0][0], kv[0][1]), kv)).with_output_types(BySymbol)
                | "Route" >> beam.ParDo(_RouteTooLateFn(self._spec)).with_output_types(ByWindow).with_outputs(DEAD_LETTER_TAG, main="in_time"))
