"""Consolidated bars across venues (``--bars consolidated:1m``): one reference price per canonical
pair and window (``bars_consolidated``), and the cross-exchange validation of each venue in it
(``quality``). The method is ``transforms.consolidation``; how a stream releases and revises them,
``transforms.consolidated_bar_panes``."""

from __future__ import annotations

from transforms.computations.base import Computation, OutputTable

CONSOLIDATED_BARS = OutputTable("bars_consolidated", "consolidated_bar", ("window_start",))
"""Stored under exchange ``consolidated`` and the pair as symbol, e.g. BTC/USD."""
VENUE_QUALITY = OutputTable("quality", "quality", ("window_start",))


class ConsolidatedBars(Computation):
    name = "consolidated"

    def tables(self, spec):
        return (CONSOLIDATED_BARS, VENUE_QUALITY) if spec.consolidation is not None else ()

    def all_tables(self):
        return (CONSOLIDATED_BARS, VENUE_QUALITY)

    def expand(self, unique, spec, others):
        # Beam: the command line reads this registry as it plans, before Beam loads
        from transforms.consolidated_bar_panes import ComputeConsolidatedBars

        computed = unique | "ConsolidatedBars" >> ComputeConsolidatedBars(spec, others.get("feed_status"))
        return {
            CONSOLIDATED_BARS.name: computed[CONSOLIDATED_BARS.name],
            VENUE_QUALITY.name: computed[VENUE_QUALITY.name],
        }, []
