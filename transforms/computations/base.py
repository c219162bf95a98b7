"""What a computation is: the contract every entry of ``transforms.computations.COMPUTATIONS`` keeps."""

from __future__ import annotations

from typing import NamedTuple


class OutputTable(NamedTuple):
    """One table of bars: its name (a sink's directory, table or topic is named after it), the
    schema of its rows (``schemas/<schema>.avsc``) and the fields that name one bar across its panes."""

    name: str
    schema: str
    identity: tuple[str, ...]
    record_type: str = "trade"
    """The record type its rows are built from; "" for a table built from other tables."""
    final_counters: tuple[tuple[str, str], ...] = ()
    """(field, counter) pairs: each field summed over the table's final rows into that counter,
    for the accounting of a record type other than trades (trades are counted by ``trade_count``)."""

    @property
    def suffix(self) -> str:
        """What sinks add to their own names for it: "" for ``bars``, ``_ticks`` for ``bars_ticks``."""
        return self.name[len("bars") :] if self.name.startswith("bars") else f"_{self.name}"


class Computation:
    """Bars of one family, computed from the skeleton's deduplicated records."""

    name: str = ""

    def tables(self, spec) -> tuple[OutputTable, ...]:
        """The tables a run of ``spec`` (``transforms.bar_spec.BarSpec``) gets from it; none when it
        is not asked for."""
        raise NotImplementedError

    def all_tables(self) -> tuple[OutputTable, ...]:
        """Every table it can write, asked for or not (readers of an output directory look for them)."""
        raise NotImplementedError

    def expand(self, unique, spec, others: dict) -> tuple[dict, list]:
        """Apply it to the deduplicated trades ((window key, UniqueRecords), windowed): returns
        ({table name: bar panes in the global window}, [its dead letters]). ``others`` holds the
        deduplicated records of other types the run reads, by type (``feed_status``,
        ``token_transfer``), and under ``tables`` the tables computations before it in
        ``COMPUTATIONS`` built (a fusion of two tables reads them there). Called only
        when ``tables(spec)`` is not empty, inside ``TradesToBars``, so its step names are scoped there."""
        raise NotImplementedError
