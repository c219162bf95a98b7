"""``cryptobeam validate`` for the on-chain tables: token activity, exchange flows and their fusion
with market bars (``transforms.computations.token_flows``, ``chain_market_fusion``)."""

from __future__ import annotations

from fractions import Fraction

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from io_connectors.bar_tables import run_of
from transforms.computations import OutputTable

RELATIVE_TOLERANCE = 1e-12


def token_activity_on_disk(files: list[str]) -> tuple[int, int]:
    """(transfers in the aggregates, retracted: retractions and the transfers they withdrew) of the
    final token activity rows of these files. A file that cannot be read counts nothing (the
    manifest check reports it)."""
    in_aggregates = retracted = 0
    for path in files:
        try:
            rows = pq.read_table(path, columns=["is_final", "transfer_count", "retracted_count"])
        except (pa.ArrowException, OSError):
            continue
        final = rows.filter(rows["is_final"])
        in_aggregates += int(pc.sum(final["transfer_count"]).as_py() or 0)
        retracted += int(pc.sum(final["retracted_count"]).as_py() or 0)
    return in_aggregates, retracted


def transfers_on_disk(files: list[str]) -> int:
    """Unique token transfers the final token activity rows of these files hold."""
    return sum(token_activity_on_disk(files))


def rows_in_files(files: list[str]) -> int:
    """Rows of these Parquet files, from their footers; an unreadable file counts none."""
    total = 0
    for path in files:
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError):
            continue
    return total


def _scaled_matches(raw: str, scaled, decimals, known: bool) -> bool:
    if not known:
        return scaled is None
    exact = Fraction(int(raw), 10**decimals)
    return scaled is not None and abs(Fraction(scaled) - exact) <= abs(exact) * Fraction(RELATIVE_TOLERANCE)


def check_chain_rows(rows: pa.Table, report, table: OutputTable) -> None:
    """Each row's pane once and at most one final pane per row; each row's figures consistent."""
    records = rows.to_pylist()
    report.checked[table.name] = len(records)
    panes, finals = set(), set()
    for row in records:
        identity = (row["exchange"], row["symbol"], *(row[k] for k in table.identity))
        label = f"{table.name} {'/'.join(str(v) for v in identity)}"
        pane = (*identity, row["pane_index"], run_of(row["file"]))
        if pane in panes:
            report.violation(f"{label}: the same pane appears twice")
        panes.add(pane)
        if row["is_final"]:
            if (*identity, run_of(row["file"])) in finals:
                report.violation(f"{label}: two final panes")
            finals.add((*identity, run_of(row["file"])))
        for problem in _problems(table.schema, row):
            report.violation(f"{label}: {problem}")


def _problems(schema: str, row: dict) -> list[str]:
    found = []
    if schema == "token_activity":
        if row["transfer_count"] < 0 or row["retracted_count"] < 0:
            found.append("a negative count")
        if max(row["unique_senders"], row["unique_receivers"]) > max(row["transfer_count"], 0):
            found.append("more distinct senders or receivers than transfers")
        if not row["volume_raw"].isdigit():
            found.append(f"volume_raw {row['volume_raw']!r} is not a whole number")
        elif not _scaled_matches(row["volume_raw"], row["volume"], row["decimals"], row["token_known"]):
            found.append("volume is not volume_raw scaled by the token's decimals")
    elif schema == "exchange_flow":
        inflow, outflow = int(row["inflow_raw"]), int(row["outflow_raw"])
        if int(row["netflow_raw"]) != inflow - outflow:
            found.append("netflow_raw is not inflow_raw - outflow_raw")
        if inflow < 0 or outflow < 0 or row["inflow_count"] < 0 or row["outflow_count"] < 0:
            found.append("a negative flow")
        for raw, scaled in (("inflow_raw", "inflow"), ("netflow_raw", "netflow")):
            if not _scaled_matches(row[raw], row[scaled], row["decimals"], row["token_known"]):
                found.append(f"{scaled} is not {raw} scaled by the token's decimals")
    elif schema == "chain_market_fusion":
        if row["has_market"] != (row["market_trades"] is not None):
            found.append("has_market disagrees with the market fields")
        if row["has_chain"] != (row["transfer_count"] is not None):
            found.append("has_chain disagrees with the chain fields")
    return found
