"""On-chain activity beside market bars (``chain_market_fusion``): for each fusion the run asks
for, one asset's token activity and exchange flows joined with one market series' bars, window by
window, waiting for both sides. The join is ``transforms.chain_market_join``."""

from __future__ import annotations

from transforms.computations.base import Computation, OutputTable

CHAIN_MARKET_FUSION = OutputTable(
    "chain_market_fusion", "chain_market_fusion", ("asset", "window_start"), record_type=""
)
"""Stored under the market series' exchange and symbol."""


class ChainMarketFusion(Computation):
    name = "chain_market_fusion"

    def tables(self, spec):
        chain = getattr(spec, "chain", None)
        return (CHAIN_MARKET_FUSION,) if chain is not None and chain.fusions else ()

    def all_tables(self):
        return (CHAIN_MARKET_FUSION,)

    def expand(self, unique, spec, others):
        # Beam: the command line reads this registry as it plans, before Beam loads
        from transforms.chain_market_join import JoinChainWithMarket

        tables = others.get("tables", {})
        fused = tables | "ChainMarketFusion" >> JoinChainWithMarket(spec)
        return {CHAIN_MARKET_FUSION.name: fused}, []
