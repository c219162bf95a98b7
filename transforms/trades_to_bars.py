"""The one code path: raw trade records in, bars and dead letters out.

Backfill and live stream both apply this transform; only the source that feeds it, the
parser it is given, the sinks that take its outputs and the runner differ.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.bars import ComputeBars
from transforms.event_time_skeleton import event_time_skeleton
from transforms.gap_fill import FillGaps
from transforms.information_bar_panes import ComputeInformationBars
from transforms.parse import Parser, ParseTrades
from transforms.record_types import record_type

TIME_BARS_TABLE = "bars"


class TradesToBars(beam.PTransform):
    """Parse, then the event-time skeleton (validate, route late data and stamp event time,
    window, dedupe), then each kind of bar the spec asks for: time bars (with gaps filled if
    asked) and information bars.

    Returns ``{"bars": time bars, "tables": {table: bars of each kind}, "dead_letters": ...}``;
    ``bars`` is None when the spec asks for no time bars.
    """

    def __init__(self, spec: BarSpec, parser: Parser, min_time_us: int | None = None,
                 max_time_us: int | None = None, label=None):
        super().__init__(label)
        self._spec = spec
        self._parser = parser
        self._time_bounds = (min_time_us, max_time_us)

    def expand(self, raw_batches):
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser)
        unique, dead_letters = event_time_skeleton(parsed.trades, record_type("trade"), self._spec, self._time_bounds)
        tables = {}
        if self._spec.time_bars:
            tables[TIME_BARS_TABLE] = self._time_bars(unique)
        if self._spec.thresholds:
            information = unique | "InformationBars" >> ComputeInformationBars(self._spec.thresholds, self._spec)
            tables.update({t.table: information[t.table] for t in self._spec.thresholds})
            dead_letters.append(information.dead_letter)
        everything_dead = [parsed.dead_letter, *dead_letters] | "AllDeadLetters" >> beam.Flatten()
        return {"bars": tables.get(TIME_BARS_TABLE), "tables": tables, "dead_letters": everything_dead}

    def _time_bars(self, unique):
        # Bars carry their window in their fields; downstream they live in the global window,
        # where each sink applies the windowing its storage needs.
        bars = (unique
                | "Bars" >> ComputeBars(self._spec)
                | "BarsToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()))
        if self._spec.fill_gaps:
            filled = bars | "FillGaps" >> FillGaps(self._spec)
            bars = (bars, filled) | "WithFilledBars" >> beam.Flatten()
        return bars
