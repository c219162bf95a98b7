"""The one code path: raw trade records in, bars and dead letters out.

Backfill and live stream both apply this transform; only the source that feeds it, the
parser it is given, the sinks that take its outputs and the runner differ.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.computations import COMPUTATIONS
from transforms.event_time_skeleton import event_time_skeleton
from transforms.feed_status import FEED_STATUS_COUNTERS
from transforms.parse import Parser, ParseTrades
from transforms.record_types import record_type


class TradesToBars(beam.PTransform):
    """Parse, then the event-time skeleton (validate, route late data and stamp event time,
    window, dedupe), then every computation the spec asks for (``transforms.computations``):
    time bars (with gaps filled if asked), information bars, consolidated bars.

    Takes raw trade batches, or ``{"trades": raw trade batches, "feed_status": raw status
    batches}`` with ``status_parser``: collectors' connection states, through the same skeleton,
    for the computations that use them (consolidated bars exclude disconnected venues).

    Returns ``{"bars": time bars, "tables": {table: bars of each kind}, "dead_letters": ...}``;
    ``bars`` is None when the spec asks for no time bars.
    """

    def __init__(
        self,
        spec: BarSpec,
        parser: Parser,
        min_time_us: int | None = None,
        max_time_us: int | None = None,
        status_parser: Parser | None = None,
        label=None,
    ):
        super().__init__(label)
        self._spec = spec
        self._parser, self._status_parser = parser, status_parser
        self._time_bounds = (min_time_us, max_time_us)

    def expand(self, inputs):
        raw_batches = inputs["trades"] if isinstance(inputs, dict) else inputs
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser)
        unique, dead_letters = event_time_skeleton(parsed.trades, record_type("trade"), self._spec, self._time_bounds)
        dead_letters = [parsed.dead_letter, *dead_letters]
        others = {}
        if isinstance(inputs, dict) and inputs.get("feed_status") is not None:
            statuses = inputs["feed_status"] | "FeedStatus" >> _FeedStatusSkeleton(
                self._spec, self._status_parser, self._time_bounds
            )
            others["feed_status"] = statuses["unique"]
            dead_letters.append(statuses["dead_letters"])
        tables = {}
        for computation in COMPUTATIONS:
            if computation.tables(self._spec):
                computed, computation_dead_letters = computation.expand(unique, self._spec, others)
                tables.update(computed)
                dead_letters += computation_dead_letters
        everything_dead = dead_letters | "AllDeadLetters" >> beam.Flatten()
        return {"bars": tables.get("bars"), "tables": tables, "dead_letters": everything_dead}


class _FeedStatusSkeleton(beam.PTransform):
    """Raw status batches -> {"unique": deduplicated status chunks, windowed, "dead_letters": ...}."""

    def __init__(self, spec: BarSpec, parser: Parser, time_bounds: tuple, label=None):
        super().__init__(label)
        self._spec, self._parser, self._time_bounds = spec, parser, time_bounds

    def expand(self, raw_batches):
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser, counted_as=FEED_STATUS_COUNTERS)
        unique, dead_letters = event_time_skeleton(
            parsed.trades, record_type("feed_status"), self._spec, self._time_bounds, counted_as=FEED_STATUS_COUNTERS
        )
        return {"unique": unique, "dead_letters": [parsed.dead_letter, *dead_letters] | "DeadLetters" >> beam.Flatten()}
