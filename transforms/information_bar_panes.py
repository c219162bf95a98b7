"""Information bars as panes: deduplicated trades in, tick, volume or dollar bars out, the same
final bars from a bounded backfill and from a live stream in any arrival order.

Per (exchange, symbol, UTC day) a stateful DoFn keeps the day's trades that are not yet in a
final bar, and an event-time timer releases bars in order as the watermark passes them:
- a bar is released once the watermark has passed its closing trade (no trade before it can
  still come on time); the day's last bar, short of its threshold, once the day is over;
- a trade that comes late, within the allowed lateness the skeleton admitted it under, changes
  the bars from its own on: each changed bar is emitted again as a new pane, a revision;
- a bar is final once the window its closing trade fell in has expired (its end plus the
  allowed lateness): no admissible trade can change it any more. Final bars leave the state,
  so it holds about the allowed lateness' worth of trades, not the day's.

One timer does all of this. It waits for the newest trade seen when it was set, not for every
trade (a timer pushed forward by each arrival would never fire while trades keep coming), so a
bounded day is released in a handful of firings and a live one about every watermark step.
"""

from __future__ import annotations

import typing
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_kinds import DAY_MICROS, Threshold
from transforms.bar_spec import BarSpec
from transforms.dead_letter import DEAD_LETTER_TAG, dead_letter
from transforms.dead_letter_counts import count_dead_letter
from transforms.event_time import ms_ceiling
from transforms.information_bars import day_bars, trade_order

DayKey = typing.Tuple[str, str, int]  # (exchange, symbol, day start us): typed, so timers' keys round-trip


def trades_by_day(element):
    """(window key, UniqueRecords) -> ((exchange, symbol, day start), (trade columns, {window
    start: duplicates})) per UTC day the chunk's trades fall in (a chunk of a window longer than
    a day may span several). The window's duplicates go with its start's day, with no trades if
    the chunk held only copies."""
    (exchange, symbol, window_start), unique = element
    chunk = unique.chunk
    window_day = window_start // DAY_MICROS
    duplicates = {window_start: unique.duplicate_count} if unique.duplicate_count else {}
    if not len(chunk):
        if duplicates:
            yield beam.window.TimestampedValue(
                ((exchange, symbol, window_day * DAY_MICROS), (_NO_TRADES, duplicates)), Timestamp(micros=window_start)
            )
        return
    ids = chunk.trade_ids()
    days = chunk.event_time // DAY_MICROS
    for day in np.unique(days).tolist():
        rows = np.flatnonzero(days == day)
        columns = (
            chunk.event_time[rows],
            chunk.price[rows],
            chunk.amount[rows],
            chunk.side[rows],
            [ids[i] for i in rows.tolist()] if len(rows) < len(ids) else ids,
        )
        yield beam.window.TimestampedValue(
            ((exchange, symbol, day * DAY_MICROS), (columns, duplicates if day == window_day else {})),
            Timestamp(micros=int(columns[0].min())),
        )


_NO_TRADES = (
    np.array([], dtype=np.int64),
    np.array([], dtype=np.float64),
    np.array([], dtype=np.float64),
    np.array([], dtype=np.int8),
    [],
)


def _wake_at(micros: int, wake, wake_state) -> None:
    """Sets the timer at ``micros`` rounded up to the millisecond: portable runners keep timers
    and timestamps in milliseconds, and a timer that fired before its target would not see the
    watermark past it, and would be set again, for ever."""
    target = ms_ceiling(micros)
    wake_state.write(target)
    wake.set(Timestamp(micros=target))


def _rows_up_to(columns: tuple, close: tuple[int, str]) -> np.ndarray:
    """Rows ordered at or before a closing trade (time, id), by (time, id length, id)."""
    times, ids = columns[0], columns[4]
    close_time, close_id = close
    tied = [
        i for i in np.flatnonzero(times == close_time).tolist() if (len(ids[i]), ids[i]) <= (len(close_id), close_id)
    ]
    return np.sort(np.concatenate((np.flatnonzero(times < close_time), np.array(tied, dtype=np.int64))))


def _joined(parts: list[tuple]) -> tuple:
    if len(parts) == 1:
        return parts[0]
    return (*(np.concatenate([p[k] for p in parts]) for k in range(4)), [i for p in parts for i in p[4]])


def _taken(columns: tuple, rows: np.ndarray) -> tuple:
    return (*(c[rows] for c in columns[:4]), [columns[4][i] for i in rows.tolist()])


class _Progress(NamedTuple):
    """One kind of bar's progress through a day."""

    final_bars: int = 0
    """How many of the day's bars are final and gone from the state: the next one's ordinal."""
    last_close: tuple | None = None
    """The last final bar's closing trade, (time, id)."""
    emitted: dict = {}
    """Released bars not yet final: ordinal -> (last pane index, the bar's values then)."""


class _InformationBarsFn(beam.DoFn):
    """All the run's information bars of one (exchange, symbol, day): the trades are kept once
    for every kind, and one timer serves them all."""

    TRADES = BagStateSpec("trades", PickleCoder())
    """The day's trades not yet in a final bar of every kind, one entry per arrival."""
    PROGRESS = ReadModifyWriteStateSpec("progress", PickleCoder())
    """Per kind (threshold text), its ``_Progress``."""
    RELEASED_UP_TO = ReadModifyWriteStateSpec("released_up_to", VarIntCoder())
    WAKE_AT = ReadModifyWriteStateSpec("wake_at", VarIntCoder())
    DUPLICATES = ReadModifyWriteStateSpec("duplicates", PickleCoder())
    """Window start -> copies dropped there, for windows whose trades are not all in final bars."""
    CLOSED = ReadModifyWriteStateSpec("closed", VarIntCoder())
    """Set once the day's bars are all final and its trades gone; stays, so that a trade that
    still comes is told apart from a new day."""
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)

    def __init__(self, thresholds: tuple[Threshold, ...], spec: BarSpec):
        self._thresholds, self._spec = thresholds, spec
        self._kinds = ",".join(t.text for t in thresholds)
        self._panes = beam.metrics.Metrics.counter("cryptobeam", "information_bar_panes")

    def process(
        self,
        element,
        trades=beam.DoFn.StateParam(TRADES),
        progress_state=beam.DoFn.StateParam(PROGRESS),
        released_state=beam.DoFn.StateParam(RELEASED_UP_TO),
        wake_state=beam.DoFn.StateParam(WAKE_AT),
        closed_state=beam.DoFn.StateParam(CLOSED),
        duplicates_state=beam.DoFn.StateParam(DUPLICATES),
        wake=beam.DoFn.TimerParam(WAKE),
    ):
        (exchange, symbol, _day), (columns, duplicates) = element
        if closed_state.read():
            yield from self._after_final(exchange, symbol, columns)
            return
        if duplicates:
            counted = dict(duplicates_state.read() or {})
            for window, count in duplicates.items():
                counted[window] = counted.get(window, 0) + count
            duplicates_state.write(counted)
        closes = [p.last_close for p in (progress_state.read() or {}).values() if p.last_close is not None]
        if closes and len(columns[0]):
            before = _rows_up_to(columns, max(closes))  # each would change a final bar
            if len(before):
                yield from self._after_final(exchange, symbol, _taken(columns, before))
                columns = _taken(columns, np.setdiff1d(np.arange(len(columns[0])), before))
        if len(columns[0]):
            trades.add(columns)
            times = columns[0]
        elif duplicates:
            times = np.array(sorted(duplicates), dtype=np.int64)  # copies only: their windows' bars may change
        else:
            return
        released, pending = released_state.read(), wake_state.read()
        late = released is not None and int(times.min()) <= released
        target = ms_ceiling(int(times.min()) if late else int(times.max()))  # late: revise at once
        if pending is not None:
            target = min(pending, target)  # never later: a timer pushed on by each arrival would not fire
        if target != pending:
            _wake_at(target, wake, wake_state)

    @on_timer(WAKE)
    def on_wake(
        self,
        key=beam.DoFn.KeyParam,
        fired_at=beam.DoFn.TimestampParam,
        trades=beam.DoFn.StateParam(TRADES),
        progress_state=beam.DoFn.StateParam(PROGRESS),
        released_state=beam.DoFn.StateParam(RELEASED_UP_TO),
        wake_state=beam.DoFn.StateParam(WAKE_AT),
        closed_state=beam.DoFn.StateParam(CLOSED),
        duplicates_state=beam.DoFn.StateParam(DUPLICATES),
        wake=beam.DoFn.TimerParam(WAKE),
    ):
        exchange, symbol, day_start = key
        watermark = fired_at.micros
        wake_state.clear()
        parts = list(trades.read())
        if not parts:
            closing = self._closing_time(day_start)
            if watermark >= closing:
                for state in (progress_state, released_state, duplicates_state):
                    state.clear()
                closed_state.write(1)
            else:
                _wake_at(closing, wake, wake_state)
            return
        joined = _joined(parts)
        columns = _taken(joined, trade_order(joined[0], joined[4]))  # ordered once for every kind
        progress = progress_state.read() or {}
        duplicates = duplicates_state.read() or {}
        targets = []
        for threshold in self._thresholds:
            done = progress.get(threshold.text, _Progress())
            # Ordered, the trades in the kind's final bars are a prefix: what is pending follows it.
            pending = (
                columns
                if done.last_close is None
                else _taken(columns, np.arange(len(_rows_up_to(columns, done.last_close)), len(columns[0])))
            )
            bars = (
                day_bars(exchange, symbol, threshold, *pending, duplicates, self._spec.interval, ordered=True)
                if len(pending[0])
                else []
            )
            done = yield from self._release(threshold, bars, done, watermark, day_start)
            progress[threshold.text] = done
            unreleased_after = int(pending[0].max()) if len(pending[0]) else None
            targets.append(self._next_wake(unreleased_after, done, watermark, day_start))
        released_state.write(watermark)
        progress_state.write(progress)
        closes = [p.last_close for p in progress.values()]
        if all(close is not None for close in closes):
            kept = np.setdiff1d(np.arange(len(columns[0])), _rows_up_to(columns, min(closes)))
            if len(kept) < len(columns[0]):
                trades.clear()
                if len(kept):
                    trades.add(_taken(columns, kept))
                settled_before = min(closes)[0]  # a window ending by then has all its trades in final bars
                if duplicates:
                    duplicates_state.write(
                        {w: n for w, n in duplicates.items() if w + self._spec.interval.micros > settled_before}
                    )
        wanted = [t for t in targets if t is not None]
        _wake_at(min(wanted) if wanted else self._closing_time(day_start), wake, wake_state)

    def _release(self, threshold: Threshold, bars: list[dict], done: _Progress, watermark: int, day_start: int):
        """Emits the panes of ``bars`` (one kind's, from its first bar not yet final) that the
        watermark releases; returns the kind's progress after them."""
        day_over = watermark >= day_start + DAY_MICROS - 1
        emitted, finished = dict(done.emitted), 0
        for bar in bars:
            bar["ordinal"] += done.final_bars
            closed = bar["threshold_reached"] and bar["window_end"] <= watermark
            if not (closed or day_over):
                break
            final = self._final_at(bar["window_end"]) <= watermark
            for pane in self._panes_of(bar, final, emitted):
                yield beam.pvalue.TaggedOutput(threshold.table, pane)
            if final and finished == bar["ordinal"] - done.final_bars:
                finished += 1
        if not finished:
            return done._replace(emitted=emitted)
        last = bars[finished - 1]
        first_open = done.final_bars + finished
        return _Progress(
            first_open,
            (last["window_end"], last["last_trade_id"]),
            {ordinal: pane for ordinal, pane in emitted.items() if ordinal >= first_open},
        )

    def _panes_of(self, bar: dict, final: bool, emitted: dict):
        """The pane to emit for a released bar, if it is new, changed, or newly final."""
        values = tuple(bar.items())
        previous = emitted.get(bar["ordinal"])
        if previous is not None and previous[1] == values and not final:
            return
        index = 0 if previous is None else previous[0] + 1
        emitted[bar["ordinal"]] = (index, values)
        self._panes.inc()
        yield {**bar, "pane_timing": "ON_TIME" if index == 0 else "LATE", "pane_index": index, "is_final": final}

    def _final_at(self, close_us: int) -> int:
        """When no admissible trade can come before ``close_us`` any more: the end of its window
        plus the allowed lateness (as the skeleton decides too late), plus the slack a runner's
        own grouping is given for the watermark it sees ahead of the skeleton's."""
        return self._spec.runner_expiry_micros(int(self._spec.interval.window_start_micros(close_us)))

    def _closing_time(self, day_start: int) -> int:
        """Past this no trade of the day can be admitted, with the runner's slack, as for a window."""
        return self._final_at(day_start + DAY_MICROS - 1)

    def _after_final(self, exchange: str, symbol: str, columns: tuple):
        """Trades that would change a final bar (the runner let them through past its slack):
        too late to count, so dead letters."""
        count_dead_letter("cryptobeam", "after_bars_final", len(columns[0]))
        for time_us, price, amount, trade_id in zip(
            columns[0].tolist(), columns[1].tolist(), columns[2].tolist(), columns[4]
        ):
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                dead_letter(
                    "after_bars_final",
                    f"the {self._kinds} bars of its day were final",
                    "information_bars",
                    {"trade_id": trade_id, "event_time_us": time_us, "price": price, "amount": amount},
                    f"bars:{self._kinds}",
                    None,
                    exchange,
                    symbol,
                    time_us,
                ),
            )

    def _next_wake(self, newest_pending: int | None, done: _Progress, watermark: int, day_start: int) -> int | None:
        """When this kind has more to release or finalize: at the newest trade not yet in a final
        bar (not each trade's own time: a handful of firings releases a bounded day), else when
        its released bars all become final, else when the day is over."""
        if newest_pending is not None and newest_pending > watermark:
            return newest_pending
        unfinal = [self._final_at(dict(values)["window_end"]) for _index, values in done.emitted.values()]
        if unfinal and max(unfinal) > watermark:
            return max(unfinal)
        day_last = day_start + DAY_MICROS - 1
        return day_last if watermark < day_last and newest_pending is not None else None


class ComputeInformationBars(beam.PTransform):
    """Deduplicated trades ((window key, UniqueRecords)) -> a PCollection of information bar panes
    per threshold (tagged by its table, in the global window) and ``dead_letter`` (trades that
    came after their bars were final)."""

    def __init__(self, thresholds: tuple[Threshold, ...], spec: BarSpec, label=None):
        super().__init__(label)
        self._thresholds, self._spec = tuple(thresholds), spec

    def expand(self, unique):
        return (
            unique
            | "ByDay" >> beam.FlatMap(trades_by_day).with_output_types(typing.Tuple[DayKey, typing.Any])
            | "Unwindow" >> beam.WindowInto(beam.window.GlobalWindows())
            | "Cut"
            >> beam.ParDo(_InformationBarsFn(self._thresholds, self._spec)).with_outputs(
                DEAD_LETTER_TAG, *(t.table for t in self._thresholds)
            )
        )
