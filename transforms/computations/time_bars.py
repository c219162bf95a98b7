"""Time bars: the exchange's klines, one bar per fixed event-time window (``--bars time:1m``,
or ``--interval``), gaps filled if asked."""

from __future__ import annotations

from transforms.computations.base import Computation, OutputTable

TIME_BARS = OutputTable("bars", "bar", ("window_start", "is_filled"))


class TimeBars(Computation):
    name = "time"

    def tables(self, spec):
        return (TIME_BARS,) if spec.time_bars else ()

    def all_tables(self):
        return (TIME_BARS,)

    def expand(self, unique, spec, others):
        import apache_beam as beam

        from transforms.bars import ComputeBars
        from transforms.gap_fill import FillGaps

        # Bars carry their window in their fields; downstream they live in the global window,
        # where each sink applies the windowing its storage needs.
        bars = (
            unique | "Bars" >> ComputeBars(spec) | "BarsToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        if spec.fill_gaps:
            filled = bars | "FillGaps" >> FillGaps(spec)
            bars = (bars, filled) | "WithFilledBars" >> beam.Flatten()
        return {TIME_BARS.name: bars}, []
