"""The one code path: raw trade records in, bars and dead letters out.

Backfill and live stream both apply this transform; only the source that feeds it, the
parser it is given, the sinks that take its outputs and the runner differ.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.computations import COMPUTATIONS
from transforms.event_time_skeleton import event_time_skeleton
from transforms.parse import Parser, ParseTrades
from transforms.record_types import record_type


class TradesToBars(beam.PTransform):
    """Parse, then the event-time skeleton (validate, route late data and stamp event time,
    window, dedupe), then every computation the spec asks for (``transforms.computations``):
    time bars (with gaps filled if asked), information bars.

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
        for computation in COMPUTATIONS:
            if computation.tables(self._spec):
                computed, computation_dead_letters = computation.expand(unique, self._spec)
                tables.update(computed)
                dead_letters += computation_dead_letters
        everything_dead = [parsed.dead_letter, *dead_letters] | "AllDeadLetters" >> beam.Flatten()
        return {"bars": tables.get("bars"), "tables": tables, "dead_letters": everything_dead}
