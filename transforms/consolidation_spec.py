"""What ``--bars consolidated:1m`` and its options ask for, apart from the method
(``transforms.consolidation``), so that the command line checks them as it plans without numpy."""

from __future__ import annotations

from dataclasses import dataclass

from transforms.bar_kinds import DAY_MICROS
from transforms.interval import Interval


@dataclass(frozen=True)
class ConsolidationSpec:
    """What ``--bars consolidated:1m`` and its options ask for."""

    interval: Interval
    partitions: int = 12
    deviation: float = 0.02
    """θ, as a fraction: 0.02 is 2 %."""
    stale_after_seconds: float = 300.0
    min_constituents: int = 1
    quote_equivalents: tuple[tuple[str, str], ...] = ()
    """(quote, counted as) pairs, e.g. (("USDT", "USD"),): off unless asked for."""
    sequential_id_exchanges: frozenset = frozenset()
    """Exchanges whose trade ids are consecutive integers per symbol, so a skipped id is a missing trade."""

    def __post_init__(self):
        if DAY_MICROS % self.interval.micros:
            raise ValueError(
                f"consolidated bars are judged day by day: their interval must divide a day, "
                f"and {self.interval.text} does not"
            )
        if self.partitions < 1 or self.interval.micros % self.partitions:
            raise ValueError(
                f"--partitions {self.partitions}: the {self.interval.text} window must split into "
                "that many equal whole-microsecond partitions"
            )
        if not 0 < self.deviation < 1:
            raise ValueError("--deviation must be between 0 and 100 %")
        if self.stale_after_seconds <= 0:
            raise ValueError("--stale-after must be positive")
        if self.min_constituents < 1:
            raise ValueError("--min-constituents must be at least 1")

    def quote_of(self, quote: str) -> str:
        return dict(self.quote_equivalents).get(quote, quote)

    def settings(self) -> dict:
        """What must match for an earlier output's consolidated bars to be reused."""
        return {
            "interval": self.interval.text,
            "partitions": self.partitions,
            "deviation": self.deviation,
            "stale_after_seconds": self.stale_after_seconds,
            "min_constituents": self.min_constituents,
            "quote_equivalents": [list(p) for p in self.quote_equivalents],
            "sequential_id_exchanges": sorted(self.sequential_id_exchanges),
        }
