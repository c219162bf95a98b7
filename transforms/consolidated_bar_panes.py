"""Consolidated bars as panes: deduplicated trades of every venue in, one reference bar per
(canonical pair, window) and one quality row per (venue, pair, window) out, the same final rows
from a bounded backfill and from a live stream in any arrival order.

First each venue's trades of a window are summarized (``transforms.consolidation.VenueWindow``)
and pooled per pair in event-time windows, firing panes as the bars' trigger says. Judging venues
is sequential (deviation hysteresis, staleness), so a stateful step per (pair, UTC day) then keeps
the day's windows that are not yet final and releases them in order with one event-time timer:
- a window is released once the watermark has passed its end: it is judged with the judgement the
  windows before it left, and emitted as a pane (EARLY before that, when the run asks for early
  panes);
- a late pane of a released window changes its own bar and may change every later one (a venue's
  exclusion carries on): each bar that changed is emitted again, as a LATE pane;
- a window is final once it has expired (its end plus the allowed lateness, plus the runner's
  slack); final windows leave the state, which keeps only the judgement after them.

The timer waits for the newest window seen when it was set, as the information bars' does, so a
bounded day is released in a handful of firings; each arriving on-time pane pulls it earlier.
"""

from __future__ import annotations

import bisect
import logging
import typing
from dataclasses import replace

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_kinds import DAY_MICROS
from transforms.bar_spec import BarSpec
from transforms.bars import PANE_TIMING_NAMES, summary_of
from transforms.consolidation import Judgement, consolidate_window, pooled_window, venue_window
from transforms.consolidation_spec import ConsolidationSpec
from transforms.event_time import ms_ceiling
from transforms.feed_status import DISCONNECTED

CONSOLIDATED_TABLE, QUALITY_TABLE = "bars_consolidated", "quality"
PairWindowKey = typing.Tuple[str, str, int]  # (base, quote, window start us)
PairDayKey = typing.Tuple[str, str, int]  # (base, quote, day start us)
_log = logging.getLogger(__name__)


class _VenueWindows(beam.DoFn):
    """(window key, UniqueRecords) -> ((base, quote, consolidated window start), (venue, VenueWindow)).
    Trades with no canonical pair cannot be pooled with other venues': they are counted as left
    out of the consolidated tables (the accounting expects them there no more)."""

    def __init__(self, spec: ConsolidationSpec):
        self._spec = spec
        self._skipped = [
            beam.metrics.Metrics.counter("cryptobeam", f"table_skipped.{table}")
            for table in (CONSOLIDATED_TABLE, QUALITY_TABLE)
        ]
        self._skipped_duplicates = [
            beam.metrics.Metrics.counter("cryptobeam", f"table_skipped_duplicates.{table}")
            for table in (CONSOLIDATED_TABLE, QUALITY_TABLE)
        ]

    def process(self, element):
        (exchange, symbol, window_start), unique = element
        chunk = unique.chunk
        if chunk.base is None or chunk.quote is None:
            for trades, duplicates in zip(self._skipped, self._skipped_duplicates):
                trades.inc(len(chunk))
                duplicates.inc(unique.duplicate_count)
            return
        spec = self._spec
        start = int(spec.interval.window_start_micros(window_start))
        ids = chunk.integer_trade_ids() if exchange in spec.sequential_id_exchanges and len(chunk) else None
        partial = summary_of(unique)  # the exact sums time bars use, computed with the chunk in bulk
        summary = venue_window(
            chunk.event_time,
            chunk.price,
            chunk.amount,
            ids,
            unique.duplicate_count,
            start,
            spec,
            (partial.volume, partial.quote_volume),
        )
        yield (chunk.base, spec.quote_of(chunk.quote), start), (f"{exchange}:{symbol}", summary)


class _PoolVenues(beam.CombineFn):
    """Each venue's summary of one pair's window, merged venue by venue; out comes the window
    ready to judge (``PooledWindow``), its prices computed here, in parallel over windows, so the
    trades never reach the sequential step's state."""

    def create_accumulator(self):
        return {}

    def add_input(self, pooled, element):
        venue, summary = element
        pooled[venue] = pooled[venue].merge(summary) if venue in pooled else summary
        return pooled

    def merge_accumulators(self, accumulators):
        merged = {}
        for pooled in accumulators:
            for item in pooled.items():
                merged = self.add_input(merged, item)
        return merged

    def extract_output(self, pooled):
        return pooled_window(pooled)


class VenueStatus(typing.NamedTuple):
    """A venue's connection states in one window, as its collector reported them."""

    venue: str
    times: tuple
    statuses: tuple


def _statuses_by_day(element, spec: ConsolidationSpec):
    """(window key, UniqueRecords of status records) -> ((base, quote, day start), VenueStatus)."""
    (exchange, symbol, _window_start), unique = element
    chunk = unique.chunk
    if chunk.base is None or chunk.quote is None or not len(chunk):
        return
    days = chunk.event_time // DAY_MICROS
    for day in sorted(set(days.tolist())):
        rows = [i for i, d in enumerate(days.tolist()) if d == day]
        yield (
            (chunk.base, spec.quote_of(chunk.quote), day * DAY_MICROS),
            VenueStatus(
                f"{exchange}:{symbol}",
                tuple(int(chunk.event_time[i]) for i in rows),
                tuple(chunk.status[i] for i in rows),
            ),
        )


def disconnected_at(log: dict, moment: int) -> frozenset:
    """The venues whose latest state at ``moment`` (their log: sorted (time, status)) is disconnected."""
    found = []
    for venue, entries in log.items():
        position = bisect.bisect_right(entries, (moment, "\uffff"))
        if position and entries[position - 1][1] == DISCONNECTED:
            found.append(venue)
    return frozenset(found)


def _by_day(element, pane=beam.DoFn.PaneInfoParam):
    """Pooled pane -> ((base, quote, day start), (window start, PooledWindow, pane timing)). A pane
    with no venue carries nothing and is dropped: Beam's Flink runner fires a window's closing pane
    with an empty accumulator, which would otherwise replace the window's trades."""
    (base, quote, window_start), pooled = element
    if not pooled.venues:
        return
    day = window_start // DAY_MICROS * DAY_MICROS
    yield (base, quote, day), (window_start, pooled, PANE_TIMING_NAMES[pane.timing])


def _count_venue_quality(rows: list[dict]) -> None:
    """Per venue, over its final rows: windows, exclusions by reason and missing trade ids, for the
    run summary's worst venues (``beam_pipelines.accounting``)."""
    for row in rows:
        venue = f"{row['exchange']}:{row['symbol']}"
        beam.metrics.Metrics.counter("cryptobeam", f"venue_windows.{venue}").inc()
        if row["exclusion_reason"]:
            beam.metrics.Metrics.counter("cryptobeam", f"venue_excluded.{venue}|{row['exclusion_reason']}").inc()
        if row["missing_trade_ids"]:
            beam.metrics.Metrics.counter("cryptobeam", f"venue_missing_ids.{venue}").inc(row["missing_trade_ids"])


class _ConsolidateFn(beam.DoFn):
    """All consolidated windows of one (pair, UTC day)."""

    ARRIVALS = BagStateSpec("arrivals", PickleCoder())
    """Pooled panes not yet folded into WINDOWS: (window start, ``PooledWindow``), and
    ``VenueStatus`` records."""
    STATUS_LOG = ReadModifyWriteStateSpec("status_log", PickleCoder())
    """Venue -> its day's connection states so far, sorted (time, status)."""
    WINDOWS = ReadModifyWriteStateSpec("windows", PickleCoder())
    """Window start -> its newest ``PooledWindow``, for the windows not yet final."""
    JUDGED = ReadModifyWriteStateSpec("judged", PickleCoder())
    """The judgement the final windows left: where the first window kept starts from."""
    EMITTED = ReadModifyWriteStateSpec("emitted", PickleCoder())
    """Window start -> (last pane index, its values, whether a released pane was emitted)."""
    RELEASED = ReadModifyWriteStateSpec("released", VarIntCoder())
    WAKE_AT = ReadModifyWriteStateSpec("wake_at", VarIntCoder())
    WAKE_FOR_PANES = ReadModifyWriteStateSpec("wake_for_panes", VarIntCoder())
    """1 while the pending wake was set only by arriving panes, for windows the watermark has
    (about) passed: such a wake may move later to the newest of them, not a planned one."""
    CLOSED = ReadModifyWriteStateSpec("closed", VarIntCoder())
    WAKE = TimerSpec("consolidate", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec):
        self._spec, self._consolidation = spec, spec.consolidation
        self._panes = beam.metrics.Metrics.counter("cryptobeam", "consolidated_bar_panes")
        self._after_final = beam.metrics.Metrics.counter("cryptobeam", "consolidated_after_final")

    def process(
        self,
        element,
        arrivals=beam.DoFn.StateParam(ARRIVALS),
        released_state=beam.DoFn.StateParam(RELEASED),
        wake_state=beam.DoFn.StateParam(WAKE_AT),
        closed_state=beam.DoFn.StateParam(CLOSED),
        for_panes_state=beam.DoFn.StateParam(WAKE_FOR_PANES),
        wake=beam.DoFn.TimerParam(WAKE),
    ):
        (base, quote, day), value = element
        released = released_state.read()
        if isinstance(value, VenueStatus):
            if not closed_state.read():
                arrivals.add(value)
                if released is not None and min(value.times) < released:  # released windows may change
                    self._wake(ms_ceiling(released), False, wake_state, for_panes_state, wake)
                elif wake_state.read() is None:  # a day with no trades yet: its state goes when it closes
                    closing = self._final_at(day + DAY_MICROS - self._consolidation.interval.micros)
                    self._wake(ms_ceiling(closing), False, wake_state, for_panes_state, wake)
            return
        window_start, pooled, timing = value
        if closed_state.read():
            # The runner's slack makes this unreachable; if it is reached, the table's accounting
            # check names the trades it lacks, so the run does not reconcile.
            self._after_final.inc(sum(v.trade_count for v in pooled.venues.values()))
            _log.warning(
                "a pane of %s/%s at %d came after its day's consolidated bars were final", base, quote, window_start
            )
            return
        arrivals.add((window_start, pooled))
        window_end = window_start + self._consolidation.interval.micros
        if released is not None and window_end <= released:
            target = released  # a revision of a released window: at once
        elif timing == "EARLY":  # an open window: it may be ahead of the watermark
            self._wake(
                ms_ceiling(max(window_start, released or window_start)), False, wake_state, for_panes_state, wake
            )
            return
        else:
            target = window_end
        self._wake(ms_ceiling(target), True, wake_state, for_panes_state, wake)

    @staticmethod
    def _wake(target: int, for_panes: bool, wake_state, for_panes_state, wake) -> None:
        """Sets the wake no later than ``target``; but a wake set only for arrived panes moves to
        the newest of them. Panes arrive for windows the watermark has (about) passed, so that
        wake still fires at once on a stream, while a bounded run, whose panes all arrive before
        any wake, releases its day in one firing rather than its first window alone."""
        pending, pending_for_panes = wake_state.read(), bool(for_panes_state.read())
        if pending is not None:
            if for_panes and pending_for_panes:
                target = max(pending, target)
            else:
                for_panes = (for_panes and target < pending) or (pending_for_panes and pending <= target)
                target = min(pending, target)  # a planned wake never moves later, or it might never fire
        for_panes_state.write(int(for_panes))
        if target != pending:
            wake_state.write(target)
            wake.set(Timestamp(micros=target))

    @on_timer(WAKE)
    def on_wake(
        self,
        key=beam.DoFn.KeyParam,
        fired_at=beam.DoFn.TimestampParam,
        arrivals=beam.DoFn.StateParam(ARRIVALS),
        windows_state=beam.DoFn.StateParam(WINDOWS),
        judged_state=beam.DoFn.StateParam(JUDGED),
        emitted_state=beam.DoFn.StateParam(EMITTED),
        released_state=beam.DoFn.StateParam(RELEASED),
        wake_state=beam.DoFn.StateParam(WAKE_AT),
        closed_state=beam.DoFn.StateParam(CLOSED),
        status_state=beam.DoFn.StateParam(STATUS_LOG),
        for_panes_state=beam.DoFn.StateParam(WAKE_FOR_PANES),
        wake=beam.DoFn.TimerParam(WAKE),
    ):
        base, quote, day_start = key
        released = released_state.read()
        watermark = max(fired_at.micros, released or fired_at.micros)
        wake_state.clear()
        for_panes_state.clear()
        arrived = list(arrivals.read())
        statuses = [a for a in arrived if isinstance(a, VenueStatus)]
        windows = self._folded(windows_state.read() or {}, [a for a in arrived if not isinstance(a, VenueStatus)])
        arrivals.clear()
        log = status_state.read() or {}
        if statuses:
            for status in statuses:
                log[status.venue] = sorted({*log.get(status.venue, ()), *zip(status.times, status.statuses)})
            status_state.write(log)
        judgement = judged_state.read() or Judgement()
        emitted = emitted_state.read() or {}
        interval = self._consolidation.interval.micros
        still_open = []
        for window_start in sorted(windows):
            released_now = window_start + interval <= watermark
            if not released_now and not self._spec.early_firing_seconds:
                break
            bar, rows, after = consolidate_window(
                (base, quote),
                window_start,
                windows[window_start],
                judgement,
                self._consolidation,
                disconnected_at(log, window_start + interval - 1),
            )
            final = released_now and self._final_at(window_start) <= watermark
            yield from self._panes_of(window_start, bar, rows, released_now, final, emitted)
            judgement = after
            if final and not still_open:  # a final prefix leaves the state
                judged_state.write(after)
                del windows[window_start]
                emitted.pop(window_start, None)
            else:
                still_open.append(window_start)
        released_state.write(watermark)
        closing = self._final_at(day_start + DAY_MICROS - interval)
        if not windows and watermark >= closing:
            for state in (windows_state, judged_state, emitted_state, released_state, status_state):
                state.clear()
            closed_state.write(1)
            return
        windows_state.write(windows)
        emitted_state.write(emitted)
        target = self._next_wake(windows, watermark, closing)
        wake_state.write(target)
        wake.set(Timestamp(micros=target))

    @staticmethod
    def _folded(windows: dict, arrivals) -> dict:
        """The newest pane of each window: pooled panes accumulate (``ComputeConsolidatedBars``)."""
        for window_start, pooled in arrivals:
            windows[window_start] = pooled
        return windows

    def _panes_of(self, window_start: int, bar: dict, rows: list[dict], released: bool, final: bool, emitted: dict):
        """The bar's pane and its quality rows, when the bar is new, changed, newly released or newly final."""
        values = (tuple(bar.items()), tuple(tuple(row.items()) for row in rows))
        previous = emitted.get(window_start)
        if previous is not None and previous[1] == values and previous[2] == released and not final:
            return
        index = 0 if previous is None else previous[0] + 1
        timing = "EARLY" if not released else ("LATE" if previous is not None and previous[2] else "ON_TIME")
        emitted[window_start] = (index, values, released)
        pane = {"pane_timing": timing, "pane_index": index, "is_final": final}
        self._panes.inc()
        if final:
            _count_venue_quality(rows)
        yield beam.pvalue.TaggedOutput(CONSOLIDATED_TABLE, {**bar, **pane})
        for row in rows:
            yield beam.pvalue.TaggedOutput(QUALITY_TABLE, {**row, **pane})

    def _final_at(self, window_start: int) -> int:
        """When no admissible trade can change the window: its expiry plus the runner's slack."""
        return self._spec.runner_expiry_micros(window_start, self._consolidation.interval)

    def _next_wake(self, windows: dict, watermark: int, closing: int) -> int:
        """At the newest window not yet released (not each one's end: a bounded day is released in
        a handful of firings; each on-time pane that arrives pulls the timer earlier), else when
        the released ones are all final, else when the day closes."""
        interval = self._consolidation.interval.micros
        unreleased = [w + interval for w in windows if w + interval > watermark]
        if unreleased:
            return ms_ceiling(max(unreleased))
        unfinal = [self._final_at(w) for w in windows if self._final_at(w) > watermark]
        return ms_ceiling(max(unfinal) if unfinal else max(closing, watermark + 1))


class ComputeConsolidatedBars(beam.PTransform):
    """Deduplicated trades ((window key, UniqueRecords), windowed) -> consolidated bar panes
    (``bars_consolidated``) and venue quality rows (``quality``), in the global window."""

    def __init__(self, spec: BarSpec, statuses=None, label=None):
        super().__init__(label)
        self._spec, self._statuses = spec, statuses

    def expand(self, unique):
        consolidation = self._spec.consolidation
        pooled = (
            unique
            | "VenueWindows"
            >> beam.ParDo(_VenueWindows(consolidation)).with_output_types(typing.Tuple[PairWindowKey, typing.Any])
            # A median is not a sum: every pane holds the whole window so far, whatever --accumulation says.
            | "PairWindows" >> replace(self._spec, accumulation="accumulating").window_into(consolidation.interval)
            | "PoolVenues" >> beam.CombinePerKey(_PoolVenues())
            | "ByPairDay" >> beam.FlatMap(_by_day).with_output_types(typing.Tuple[PairDayKey, typing.Any])
            | "Unwindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        if self._statuses is not None:
            statuses = (
                self._statuses
                | "StatusesByPairDay"
                >> beam.FlatMap(_statuses_by_day, consolidation).with_output_types(typing.Tuple[PairDayKey, typing.Any])
                | "UnwindowStatuses" >> beam.WindowInto(beam.window.GlobalWindows())
            )
            pooled = (pooled, statuses) | "WithStatuses" >> beam.Flatten()
        return pooled | "Consolidate" >> beam.ParDo(_ConsolidateFn(self._spec)).with_outputs(
            CONSOLIDATED_TABLE, QUALITY_TABLE
        )
