"""Record accounting: every record read is in a final bar, a dead letter, or counted as a duplicate.

The figures come from Beam metrics, which every runner reports, so the same check runs
locally and on a cluster. Beside the reconciliation they carry what the run met that it could
not map: records whose instrument is not in the instruments table, per symbol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from io_connectors.metric_results import NAMESPACE, counter_totals, metrics_in
from transforms.computations import counted_table


@dataclass
class Accounting:
    records_in: int = 0
    trades_parsed: int = 0
    unique_trades: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    trades_in_final_bars: int = 0
    duplicates_in_final_bars: int = 0
    bar_rows_written: int = 0
    filled_bars_written: int = 0
    bar_files_written: int = 0
    dead_letter_rows_written: int = 0
    sink_rejections: int = 0
    sink_dead_letters_written: int = 0
    instrument_unknown_records: int = 0
    """Records whose (exchange, symbol) is not in the instruments table (they keep a best-effort pair)."""
    unknown_instruments: dict[str, int] = field(default_factory=dict)
    """Records per unknown ``exchange:symbol``; per parser, names past the first thousand share ``(more)``."""
    rows_by_table: dict[str, int] = field(default_factory=dict)
    """Bar rows (panes) written per table of bars (``bars``, ``bars_ticks``, ...). The bar figures
    above (rows, filled, trades and duplicates in final bars) are the run's first table's."""

    # Figures kept per key, from counters named ``<prefix><key>``; summed key by key over chunks.
    trades_by_table: dict[str, int] = field(default_factory=dict)
    """Trades in each table's final bars: every table holds each admitted unique trade once."""
    skipped_by_table: dict[str, int] = field(default_factory=dict)
    """Unique trades a table leaves out by its definition: consolidated bars and venue quality
    cannot pool a trade with no canonical pair."""
    skipped_duplicates_by_table: dict[str, int] = field(default_factory=dict)
    """The duplicates of those trades' windows, left out with them."""
    feed_status: dict[str, int] = field(default_factory=dict)
    """Collectors' connection-state records a stream read beside its trades (``--status-topic``),
    reconciled on their own: ``records_in`` = ``unique_trades`` (used) + ``duplicates`` + their
    dead letters, which are written with the trades' and so counted above."""
    token_transfers: dict[str, int] = field(default_factory=dict)
    """On-chain token transfers the run read, reconciled on their own: ``records_in`` =
    ``in_aggregates`` (canonical transfers in the final token activity rows) + ``retracted``
    (retractions, and the transfers they withdrew) + ``duplicates`` + their dead letters, which
    are written with the trades' and so counted above."""
    blocks: dict[str, int] = field(default_factory=dict)
    """Blocks the run read to fill in its token transfers' block hashes and times, reconciled on
    their own: ``records_in`` = ``used`` (each block record kept: the join's lookup holds it or its
    retraction withdrew it) + ``duplicates`` + their dead letters, which are written with the
    trades' and so counted above."""
    venue_windows: dict[str, int] = field(default_factory=dict)
    """Consolidated bars: final windows per venue (``exchange:symbol``)..."""
    venue_exclusions: dict[str, int] = field(default_factory=dict)
    """... those it was excluded from, per ``venue|reason``..."""
    venue_missing_ids: dict[str, int] = field(default_factory=dict)
    """... and the trade ids found missing in them."""

    _BY_KEY = {
        "dead_letters_by_reason": "dead_letters.",
        "unknown_instruments": "instrument_unknown.",
        "rows_by_table": "table_rows.",
        "trades_by_table": "table_trades.",
        "skipped_by_table": "table_skipped.",
        "skipped_duplicates_by_table": "table_skipped_duplicates.",
        "feed_status": "feed_status.",
        "token_transfers": "token_transfer.",
        "blocks": "block.",
        "venue_windows": "venue_windows.",
        "venue_exclusions": "venue_excluded.",
        "venue_missing_ids": "venue_missing_ids.",
    }

    @classmethod
    def from_counters(cls, counters: dict[str, int]) -> "Accounting":
        accounting = cls()
        for name, value in counters.items():
            prefixed = [(kept, prefix) for kept, prefix in cls._BY_KEY.items() if name.startswith(prefix)]
            if name in cls._BY_KEY:  # a manifest's saved accounting
                if isinstance(value, dict):
                    getattr(accounting, name).update(value)
            elif prefixed:
                kept, prefix = prefixed[0]
                getattr(accounting, kept)[name[len(prefix) :]] = value
            elif hasattr(accounting, name) and not name.startswith("_"):
                setattr(accounting, name, value)
        return accounting

    @classmethod
    def total(cls, parts: list["Accounting"]) -> "Accounting":
        total = cls()
        for part in parts:
            for name, value in part.as_dict().items():
                if name in cls._BY_KEY:
                    sums = getattr(total, name)
                    for key, n in value.items():
                        sums[key] = sums.get(key, 0) + n
                else:
                    setattr(total, name, getattr(total, name) + value)
        return total

    def worst_venues(self, limit: int = 3) -> list[tuple[str, str]]:
        """(venue, what went wrong) for the venues of consolidated bars most often excluded, then
        with the most missing trade ids; none when nothing went wrong."""
        excluded: dict[str, dict[str, int]] = {}
        for key, windows in self.venue_exclusions.items():
            venue, _, reason = key.rpartition("|")
            excluded.setdefault(venue, {})[reason] = windows
        ranked = sorted(
            set(excluded) | {v for v, n in self.venue_missing_ids.items() if n},
            key=lambda v: (-sum(excluded.get(v, {}).values()), -self.venue_missing_ids.get(v, 0), v),
        )
        worst = []
        for venue in ranked[:limit]:
            reasons = excluded.get(venue, {})
            parts = (
                [
                    f"excluded {sum(reasons.values()):,}/{self.venue_windows.get(venue, 0):,} windows"
                    f" ({', '.join(f'{r} {n:,}' for r, n in sorted(reasons.items()))})"
                ]
                if reasons
                else []
            )
            if self.venue_missing_ids.get(venue):
                parts.append(f"{self.venue_missing_ids[venue]:,} trade ids missing")
            worst.append((venue, "; ".join(parts)))
        return worst

    @property
    def distinct_unknown_instruments(self) -> int:
        """Distinct unknown symbols over the whole run (chunks and streams name the same symbol alike)."""
        return len(self.unknown_instruments)

    @property
    def accounted(self) -> int:
        """What the records read became: trades in final bars (or left out of the counted table
        by its definition), dead letters, duplicates, and status records used or duplicated."""
        return (
            self.trades_in_final_bars
            + self._skipped_by_counted_table()
            + self.dead_letter_rows_written
            + self.duplicates
            + self.feed_status.get("unique_trades", 0)
            + self.feed_status.get("duplicates", 0)
            + self._transfers_accounted
            + self.blocks_accounted
        )

    @property
    def _transfers_accounted(self) -> int:
        transfers = self.token_transfers
        return transfers.get("in_aggregates", 0) + transfers.get("retracted", 0) + transfers.get("duplicates", 0)

    @property
    def blocks_accounted(self) -> int:
        """Blocks read that are not dead letters: used by the join, or copies of one used."""
        return self.blocks.get("used", 0) + self.blocks.get("duplicates", 0)

    @property
    def all_records_in(self) -> int:
        return (
            self.records_in
            + self.feed_status.get("records_in", 0)
            + self.token_transfers.get("records_in", 0)
            + self.blocks.get("records_in", 0)
        )

    def _skipped_by_counted_table(self, duplicates: bool = False) -> int:
        """Trades (or their duplicates) the table the bar figures count leaves out by its definition."""
        skipped = self.skipped_duplicates_by_table if duplicates else self.skipped_by_table
        return skipped.get(counted_table(self.rows_by_table.keys() | self.trades_by_table.keys()), 0)

    def problems(self) -> list[str]:
        found = []
        if self.all_records_in != self.accounted:
            skipped, statuses = self._skipped_by_counted_table(), self.feed_status.get("records_in", 0)
            found.append(
                f"records read ({self.records_in}"
                + (f" trades + {statuses} status records" if statuses else "")
                + f") != trades in final bars ({self.trades_in_final_bars})"
                + (f" + trades its table leaves out ({skipped})" if skipped else "")
                + f" + dead letters written ({self.dead_letter_rows_written}) + duplicates ({self.duplicates})"
                + (
                    f" + status records used ({self.feed_status.get('unique_trades', 0)}) and duplicated "
                    f"({self.feed_status.get('duplicates', 0)})"
                    if statuses
                    else ""
                )
                + (
                    f" + token transfers read ({self.token_transfers.get('records_in', 0)}) in aggregates "
                    f"({self.token_transfers.get('in_aggregates', 0)}), retracted "
                    f"({self.token_transfers.get('retracted', 0)}) and duplicated "
                    f"({self.token_transfers.get('duplicates', 0)})"
                    if self.token_transfers
                    else ""
                )
                + (
                    f" + blocks read ({self.blocks.get('records_in', 0)}) used ({self.blocks.get('used', 0)}) "
                    f"and duplicated ({self.blocks.get('duplicates', 0)})"
                    if self.blocks
                    else ""
                )
            )
        unique_transfers = self.token_transfers.get("unique_trades", 0)
        in_aggregates, retracted = (self.token_transfers.get(key, 0) for key in ("in_aggregates", "retracted"))
        if unique_transfers != in_aggregates + retracted:
            found.append(
                f"unique token transfers ({unique_transfers}) != transfers in final token activity "
                f"({in_aggregates}) + retracted ({retracted})"
            )
        if self.dead_letters != self.dead_letter_rows_written:
            found.append(
                f"dead letters counted ({self.dead_letters}) != dead letters written ({self.dead_letter_rows_written})"
            )
        if (
            not self.trades_by_table
            and self.unique_trades != self.trades_in_final_bars + self._skipped_by_counted_table()
        ):
            found.append(f"unique trades ({self.unique_trades}) != trades in final bars ({self.trades_in_final_bars})")
        for table, trades in sorted(self.trades_by_table.items()):
            admitted = self.unique_trades - self._not_in_table(table)
            if trades != admitted:
                found.append(
                    f"table {table}: trades in final bars ({trades}) != unique trades admitted to it ({admitted})"
                )
        if self.sink_rejections != self.sink_dead_letters_written:
            found.append(
                f"rows rejected by a sink ({self.sink_rejections}) != written as dead letters "
                f"({self.sink_dead_letters_written})"
            )
        if self.duplicates != self.duplicates_in_final_bars + self._skipped_by_counted_table(duplicates=True):
            found.append(
                f"duplicates counted ({self.duplicates}) != duplicates in final bars ({self.duplicates_in_final_bars})"
            )
        return found

    def _not_in_table(self, table: str) -> int:
        """Unique trades a table's bars leave out: as dead letters, information bars refuse a trade
        that would change a bar already final (``after_bars_final``; time bars refuse none); by
        definition, those the table counted as skipped."""
        refused = 0 if table == "bars" else self.dead_letters_by_reason.get("after_bars_final", 0)
        return refused + self.skipped_by_table.get(table, 0)

    def as_dict(self) -> dict:
        return asdict(self)


def counters_of(result, namespace: str = NAMESPACE) -> dict[str, int]:
    """A finished run's counters, each summed over all steps (``io_connectors.metric_results``)."""
    return counter_totals(metrics_in(result.metrics(), namespace)["counters"])
