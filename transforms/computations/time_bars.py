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
        # Beam: the command line reads this registry as it plans, before Beam loads
        from transforms.bars import time_bars

        return {TIME_BARS.name: time_bars(unique, spec)}, []
