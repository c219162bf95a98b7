"""Bars: combine the partial bars of each (exchange, symbol, window) as panes fire, and stamp panes.

Keys include the window start. One key per window keeps the runner's per-key trigger
bookkeeping constant-size, so batch cost grows linearly with the number of windows.
"""

from __future__ import annotations

import operator

import apache_beam as beam
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.bar_spec import BarSpec
from transforms.dedupe import UniqueRecords
from transforms.gap_fill import FillGaps
from transforms.keys import ByWindow
from transforms.partial_bar import PartialBar, partial_bar

PANE_TIMING_NAMES = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    # Batch runners may not say; a bounded run's single pane is its on-time pane.
    PaneInfoTiming.UNKNOWN: "ON_TIME",
}


_NO_TRADES = PartialBar()  # immutable, so one instance serves every new accumulator


def summary_of(unique: UniqueRecords) -> PartialBar:
    """A deduplicated chunk's partial bar: the one computed in bulk with the chunk when dedupe
    removed nothing, else computed from what is left."""
    if unique.chunk.summary is not None and not unique.duplicate_count:
        return unique.chunk.summary
    return partial_bar(unique.chunk, unique.duplicate_count)


class MergePartialBars(beam.CombineFn):
    def create_accumulator(self):
        return _NO_TRADES

    def add_input(self, accumulator, partial):
        return accumulator.merge(partial)

    def merge_accumulators(self, accumulators):
        merged = _NO_TRADES
        for accumulator in accumulators:
            merged = merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class _FormatBar(beam.DoFn):
    """Turn a combined pane into a bar record with its pane metadata."""

    def __init__(self, spec: BarSpec):
        self._spec = spec
        self._panes = beam.metrics.Metrics.counter("cryptobeam", "bar_panes")

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        (exchange, symbol, window_start), partial = element
        if partial.trade_count:  # a discarding pane may hold only re-delivered trades
            yield self._bar(exchange, symbol, window_start, partial, pane)

    def _bar(self, exchange, symbol, window_start, partial, pane) -> dict:
        timing = PANE_TIMING_NAMES[pane.timing]
        self._panes.inc()
        return {
            "exchange": exchange,
            "symbol": symbol,
            "interval": self._spec.interval.text,
            "window_start": window_start,
            "window_end": window_start + self._spec.interval.micros,
            **partial.ohlcv(),
            "is_filled": False,
            "pane_timing": timing,
            "pane_index": int(pane.index),
            # Final only when the runner says no pane can follow: compliant runners fire a last
            # pane when the window expires. Bounded outputs are finalized by their sink, which has
            # seen every pane (beam_pipelines.outputs.FinalizeBoundedBars).
            "is_final": bool(pane.is_last),
        }


def newest_pane_final(bars: list[dict], identity: tuple[str, ...] = ("window_start", "is_filled")) -> list[dict]:
    """Mark exactly the newest pane of each bar (named by its ``identity`` fields) final, for a
    caller that has seen every pane; returns them ordered by bar, then pane.

    Only valid once no further pane can come, e.g. after a bounded input is exhausted.
    """
    bar_of = operator.itemgetter(*identity)
    bars = sorted(bars, key=lambda b: (bar_of(b), b["pane_index"]))
    for i, bar in enumerate(bars):
        newest = i + 1 == len(bars) or bar_of(bars[i + 1]) != bar_of(bar)
        if bar["is_final"] != newest:
            bars[i] = {**bar, "is_final": newest}
    return bars


class ComputeBars(beam.PTransform):
    """Windowed (window key, UniqueRecords) -> bar records, one per fired pane."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, unique):
        # Summarized before the grouping: a runner that does not combine before its shuffle (the
        # in-process one, under a trigger with late firings) would otherwise hold and move trades.
        return (
            unique
            | "Summarize" >> beam.MapTuple(lambda key, records: (key, summary_of(records))).with_output_types(ByWindow)
            | "MergePartials" >> beam.CombinePerKey(MergePartialBars())
            | "FormatBars" >> beam.ParDo(_FormatBar(self._spec))
        )


def time_bars(unique, spec: BarSpec):
    """The time bars of the deduplicated records, with the empty windows filled if the spec asks,
    applied as steps of the caller (``transforms.computations.time_bars``)."""
    # Bars carry their window in their fields; downstream they live in the global window,
    # where each sink applies the windowing its storage needs.
    bars = unique | "Bars" >> ComputeBars(spec) | "BarsToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
    if spec.fill_gaps:
        filled = bars | "FillGaps" >> FillGaps(spec)
        bars = (bars, filled) | "WithFilledBars" >> beam.Flatten()
    return bars
