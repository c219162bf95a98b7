"""What bars to build and how their panes fire: one value object shared by backfill and stream.

It imports Beam only to build the windowing: the command line reads a BarSpec while it plans a
backfill, before any pipeline exists, and a local backfill's chunk workers should not wait for
the command line to import Beam for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms.bar_kinds import DAY_MICROS, Threshold
from transforms.interval import Interval, parse_interval

ACCUMULATION_MODES = ("accumulating", "discarding")  # Beam's AccumulationMode, by name


@dataclass(frozen=True)
class BarSpec:
    """Interval, trigger and lateness settings, and which bars to build.

    The defaults are the batch defaults: no early firings and no allowed lateness, which gives
    exactly one final (ON_TIME) pane per bar. The interval is the time bars' and the grain of
    the lateness and dedupe windows every kind of bar shares.
    """

    interval: Interval
    early_firing_seconds: float | None = None
    allowed_lateness_seconds: int = 0
    accumulation: str = "accumulating"
    fill_gaps: bool = False
    time_bars: bool = True
    thresholds: tuple[Threshold, ...] = ()
    """Information-driven bars (tick, volume, dollar), one table each."""
    consolidation: object = None
    """``transforms.consolidation.ConsolidationSpec`` for consolidated bars across venues, or None."""
    chain: object = None
    """``transforms.chain_spec.ChainSpec`` for tables of on-chain token transfers, or None."""

    @classmethod
    def of(cls, interval: str, **kwargs) -> "BarSpec":
        return cls(interval=parse_interval(interval), **kwargs)

    def __post_init__(self):
        if self.accumulation not in ACCUMULATION_MODES:
            raise ValueError(f"accumulation must be one of {', '.join(ACCUMULATION_MODES)}, got {self.accumulation!r}")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed lateness must not be negative")
        if self.early_firing_seconds is not None and self.early_firing_seconds <= 0:
            raise ValueError("the early firing period must be positive")
        if self.thresholds and self.interval.micros > DAY_MICROS:
            raise ValueError(
                f"information bars count from each UTC day's start: an interval of {self.interval.text} "
                "would put one window (the grain of their lateness and dedupe) across days; use 1d or less"
            )
        if not self.time_bars and not self.thresholds and self.consolidation is None and self.chain is None:
            raise ValueError(
                "no bars asked for: time bars, information bars, consolidated bars, on-chain tables or several"
            )
        if self.chain is not None and self.chain.fusions and self.accumulation != "accumulating":
            raise ValueError("a chain-market fusion joins the newest pane of each side: it needs accumulating panes")
        if self.consolidation is not None and self.consolidation.interval.micros % self.interval.micros:
            raise ValueError(
                f"consolidated bars of {self.consolidation.interval.text} must be a whole number of the "
                f"run's {self.interval.text} windows (the grain of its lateness and dedupe)"
            )

    @property
    def day_by_day(self) -> bool:
        """Whether some bars depend on the whole UTC day before them (information bars count from
        its start, consolidated bars judge venues through it): a backfill then cuts only at midnight."""
        return bool(self.thresholds) or self.consolidation is not None

    @property
    def allowed_lateness_micros(self) -> int:
        return int(self.allowed_lateness_seconds) * 1_000_000

    @property
    def runner_slack_micros(self) -> int:
        """Extra lateness granted to the runner's own GroupByKey beyond ours.

        ``RouteTooLateAndChunk`` decides lateness from the watermark it has seen; the runner's
        GroupByKey, a stage later, may see a slightly newer watermark. Giving the runner
        this margin means it never drops what we admitted, so nothing is dropped silently.
        """
        return max(self.interval.micros, 60_000_000)

    def expiry_micros(self, window_start_us: int, interval: Interval | None = None) -> int:
        """When a window (of ``interval``, the run's by default) stops taking data: its end plus
        the allowed lateness."""
        return window_start_us + (interval or self.interval).micros + self.allowed_lateness_micros

    def runner_expiry_micros(self, window_start_us: int, interval: Interval | None = None) -> int:
        """When the runner stops taking a window's data: our expiry plus its slack. Per-window
        state downstream of ``RouteTooLateAndChunk`` lives until then, as the runner's own would."""
        return self.expiry_micros(window_start_us, interval) + self.runner_slack_micros

    def window_into(self, interval: Interval | None = None):
        """The ``beam.WindowInto`` that puts trades in their bars' windows (of ``interval``, the
        run's by default), with these panes."""
        # Beam only here: the command line reads a BarSpec as it plans, before Beam loads
        import apache_beam as beam

        triggers = beam.transforms.trigger
        early = triggers.AfterProcessingTime(self.early_firing_seconds) if self.early_firing_seconds else None
        # A late trigger is always present: a finished trigger would make the runner drop
        # stragglers in the slack margin silently.
        trigger = triggers.AfterWatermark(early=early, late=triggers.AfterCount(1))
        interval = interval or self.interval
        return beam.WindowInto(
            beam.window.FixedWindows(interval.seconds, offset=interval.offset_seconds),
            trigger=trigger,
            accumulation_mode=getattr(triggers.AccumulationMode, self.accumulation.upper()),
            allowed_lateness=beam.utils.timestamp.Duration(
                micros=self.allowed_lateness_micros + self.runner_slack_micros
            ),
        )
