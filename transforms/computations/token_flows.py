"""On-chain token activity per (chain, token, window) (``token_activity``) and, with address
labels, flows into and out of each labelled entity (``exchange_flows``), from the run's token
transfers. The arithmetic is ``transforms.token_aggregates``; the panes, ``transforms.token_flow_panes``."""

from __future__ import annotations

from transforms.computations.base import Computation, OutputTable
from transforms.token_transfers import TOKEN_TRANSFER_COUNTERS

TOKEN_ACTIVITY = OutputTable(
    "token_activity",
    "token_activity",
    ("token_address", "window_start"),
    record_type="token_transfer",
    final_counters=(
        ("transfer_count", f"{TOKEN_TRANSFER_COUNTERS}in_aggregates"),
        ("retracted_count", f"{TOKEN_TRANSFER_COUNTERS}retracted"),
    ),
)
"""Stored under exchange = the chain and symbol ``erc20``: one partition per chain and day."""
EXCHANGE_FLOWS = OutputTable(
    "exchange_flows", "exchange_flow", ("token_address", "entity", "window_start"), record_type="token_transfer"
)


class TokenFlows(Computation):
    name = "token_flows"

    def tables(self, spec):
        chain = getattr(spec, "chain", None)
        if chain is None:
            return ()
        return (TOKEN_ACTIVITY, EXCHANGE_FLOWS) if chain.labels is not None else (TOKEN_ACTIVITY,)

    def all_tables(self):
        return (TOKEN_ACTIVITY, EXCHANGE_FLOWS)

    def expand(self, unique, spec, others):
        # Beam: the command line reads this registry as it plans, before Beam loads
        from transforms.token_flow_panes import ComputeTokenFlows

        transfers = others.get("token_transfer")
        if transfers is None:
            raise ValueError("token activity needs token transfers: the run reads none")
        computed = transfers | "TokenFlows" >> ComputeTokenFlows(spec)
        tables = {TOKEN_ACTIVITY.name: computed[TOKEN_ACTIVITY.name]}
        if spec.chain.labels is not None:
            tables[EXCHANGE_FLOWS.name] = computed[EXCHANGE_FLOWS.name]
        return tables, []
