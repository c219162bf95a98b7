"""The one code path: raw trade records in, bars and dead letters out.

Backfill and live stream both apply this transform; only the source that feeds it, the
parser it is given, the sinks that take its outputs and the runner differ.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.bars import ComputeBars
from transforms.dedupe import DedupeTrades
from transforms.gap_fill import FillGaps
from transforms.keys import KeyBySymbol
from transforms.lateness import RouteTooLate
from transforms.parse import Parser, ParseTrades
from transforms.validate import ValidateTrades


class TradesToBars(beam.PTransform):
    """Parse, validate, route late data and stamp event time, window, dedupe, build bars, fill gaps.

    Returns ``{"bars": ..., "dead_letters": ...}``.
    """

    def __init__(self, spec: BarSpec, parser: Parser, min_time_us: int | None = None,
                 max_time_us: int | None = None, label=None):
        super().__init__(label)
        self._spec = spec
        self._parser = parser
        self._time_bounds = (min_time_us, max_time_us)

    def expand(self, raw_batches):
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser)
        valid = parsed.trades | "Validate" >> ValidateTrades(*self._time_bounds)
        in_time = (valid.valid
                   | "KeyBySymbol" >> KeyBySymbol()
                   | "RouteTooLateAndStampEventTime" >> RouteTooLate(self._spec))
        unique = (in_time.in_time
                  | "Window" >> self._spec.window_into()
                  | "Dedupe" >> DedupeTrades())
        # Bars carry their window in their fields; downstream they live in the global window,
        # where each sink applies the windowing its storage needs.
        bars = (unique.unique
                | "Bars" >> ComputeBars(self._spec)
                | "BarsToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()))
        if self._spec.fill_gaps:
            filled = bars | "FillGaps" >> FillGaps(self._spec)
            bars = (bars, filled) | "WithFilledBars" >> beam.Flatten()
        dedupe_dead_letters = unique.dead_letter | "DeadLettersToGlobalWindow" >> beam.WindowInto(
            beam.window.GlobalWindows())
        dead_letters = ((parsed.dead_letter, valid.dead_letter, in_time.dead_letter, dedupe_dead_letters)
                        | "AllDeadLetters" >> beam.Flatten())
        return {"bars": bars, "dead_letters": dead_letters}
