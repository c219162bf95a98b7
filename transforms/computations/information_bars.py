"""Information-driven bars: tick, volume and dollar bars (``--bars ticks:1000``, ``volume:50``,
``dollar:1e6``), one table per kind, each bar named by (UTC day, ordinal). The definition is
``transforms.information_bars``; how a stream releases and revises them, ``transforms.information_bar_panes``."""

from __future__ import annotations

from transforms.bar_kinds import KINDS
from transforms.computations.base import Computation, OutputTable

IDENTITY = ("day", "ordinal")


def _table(kind: str) -> OutputTable:
    return OutputTable(f"bars_{kind}", "information_bar", IDENTITY)


class InformationBars(Computation):
    name = "information"

    def tables(self, spec):
        return tuple(_table(t.kind) for t in spec.thresholds)

    def all_tables(self):
        return tuple(_table(kind) for kind in KINDS)

    def expand(self, unique, spec, others):
        # Beam: the command line reads this registry as it plans, before Beam loads
        from transforms.information_bar_panes import ComputeInformationBars

        bars = unique | "InformationBars" >> ComputeInformationBars(spec.thresholds, spec)
        return {t.table: bars[t.table] for t in spec.thresholds}, [bars.dead_letter]
