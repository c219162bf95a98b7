"""Computations: what is built from the event-time skeleton's deduplicated records, each into
its own output tables.

A computation is one module here (a ``Computation``, see ``base``) and one line in
``COMPUTATIONS``. ``TradesToBars`` applies every computation the run's ``BarSpec`` asks for;
the sinks, ``validate`` and the accounting learn the run's tables from ``output_tables``.

Beam-free at import: the command line plans and checks runs with it before Beam loads.
"""

from __future__ import annotations

from transforms.computations.base import Computation, OutputTable
from transforms.computations.chain_market_fusion import ChainMarketFusion
from transforms.computations.consolidated_bars import ConsolidatedBars
from transforms.computations.information_bars import InformationBars
from transforms.computations.time_bars import TIME_BARS, TimeBars
from transforms.computations.token_flows import TokenFlows

COMPUTATIONS: tuple[Computation, ...] = (
    TimeBars(),
    InformationBars(),
    ConsolidatedBars(),
    TokenFlows(),
    ChainMarketFusion(),  # after the tables it joins
)


def output_tables(spec) -> tuple[OutputTable, ...]:
    """Every table a run of ``spec`` writes, in order; the first is the one its accounting counts
    trades from (each table holds every unique trade once in its final bars)."""
    return tuple(table for computation in COMPUTATIONS for table in computation.tables(spec))


def counted_table(names) -> str | None:
    """Of the tables named (a run's, or those found in an output), the one whose final bars the
    accounting counts trades in: the first in the computations' order, time bars when there are any."""
    order = [
        table.name for computation in COMPUTATIONS for table in computation.all_tables() if table.record_type == "trade"
    ]
    found = [name for name in order if name in names]
    return found[0] if found else None


def table_named(name: str) -> OutputTable:
    """The table of that name, whatever run wrote it (``bars``, ``bars_ticks``, ...)."""
    for computation in COMPUTATIONS:
        for table in computation.all_tables():
            if table.name == name:
                return table
    raise KeyError(f"no computation writes a table {name!r}")


__all__ = ["COMPUTATIONS", "Computation", "OutputTable", "TIME_BARS", "counted_table", "output_tables", "table_named"]
