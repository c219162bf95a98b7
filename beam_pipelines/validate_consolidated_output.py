"""``validate``'s checks of consolidated bars (``bars_consolidated``) and of the venue quality
table (``quality``): each on its own, then the two against each other, window by window."""

from __future__ import annotations

import json
import math

import pyarrow as pa

from io_connectors.bar_tables import run_of
from transforms.consolidation import DEVIATION, DISCONNECTED, INSUFFICIENT_CONSTITUENTS, STALE
from transforms.interval import parse_interval

_REASONS = (DEVIATION, STALE, DISCONNECTED)
_SHARE_TOLERANCE = 1e-9


def _pane_key(row: dict, *identity: str) -> tuple:
    # A restarted stream numbers a bar's panes afresh: a pane is unique per run.
    return (*(row[k] for k in identity), row["pane_index"], run_of(row["file"]))


def _newest_final(rows: list[dict], *identity: str) -> dict:
    """The final pane of each row identity (the newest file's, where a restart wrote it twice)."""
    newest = {}
    for row in rows:
        key = tuple(row[k] for k in identity)
        if row["is_final"] and (key not in newest or row["file"] >= newest[key]["file"]):
            newest[key] = row
    return newest


def check_consolidated_bars(table: pa.Table, report) -> None:
    """Each pane once; the window as long as its interval; a price exactly when there is no
    reason for none; coverage the share of partitions with trades; the volume shares of the
    included venues summing to one."""
    rows = table.to_pylist()
    report.checked["bars_consolidated"] = len(rows)
    seen = set()
    for bar in rows:
        label = f"bars_consolidated {bar['symbol']} {bar['window_start'].isoformat()}"
        key = _pane_key(bar, "symbol", "window_start")
        if key in seen:
            report.violation(f"{label}: the same bar pane appears twice")
        seen.add(key)
        if (bar["window_end"] - bar["window_start"]).total_seconds() != parse_interval(bar["interval"]).seconds:
            report.violation(f"{label}: window_end - window_start is not {bar['interval']}")
        if (bar["price"] is None) != (bar["no_price_reason"] == INSUFFICIENT_CONSTITUENTS):
            report.violation(f"{label}: a price must be missing exactly when the window has too few constituents")
        if bar["price"] is not None and not (bar["price"] > 0 and math.isfinite(bar["price"])):
            report.violation(f"{label}: price {bar['price']} is not a positive number")
        if (
            not 0 <= bar["partitions_with_trades"] <= bar["partitions"]
            or bar["coverage"] != bar["partitions_with_trades"] / bar["partitions"]
        ):
            report.violation(f"{label}: coverage is not partitions with trades / partitions")
        constituents = [c for c in bar["constituents"].split(",") if c]
        shares = json.loads(bar["volume_shares"])
        if len(constituents) != bar["constituent_count"] or constituents != sorted(constituents):
            report.violation(f"{label}: constituents and constituent_count disagree")
        if shares and (sorted(shares) != constituents or abs(math.fsum(shares.values()) - 1) > _SHARE_TOLERANCE):
            report.violation(f"{label}: volume shares are not the constituents' or do not sum to 1")
        if set(constituents) & set(json.loads(bar["excluded"])):
            report.violation(f"{label}: a venue is both a constituent and excluded")
        if bar["included_trade_count"] > bar["trade_count"]:
            report.violation(f"{label}: more trades included than the window holds")


def check_venue_quality(table: pa.Table, consolidated: pa.Table | None, report) -> None:
    """Each row's fields consistent with one another, and each final consolidated bar's
    constituents, exclusions and trades those of its venues' final quality rows."""
    rows = table.to_pylist()
    report.checked["quality"] = len(rows)
    seen = set()
    for row in rows:
        label = f"quality {row['exchange']}/{row['symbol']} {row['window_start'].isoformat()}"
        key = _pane_key(row, "exchange", "symbol", "window_start")
        if key in seen:
            report.violation(f"{label}: the same row pane appears twice")
        seen.add(key)
        if row["excluded"] != (row["exclusion_reason"] is not None) or (
            row["exclusion_reason"] is not None and row["exclusion_reason"] not in _REASONS
        ):
            report.violation(f"{label}: excluded and exclusion_reason ({row['exclusion_reason']}) disagree")
        if (row["vwap"] is None) != (row["trade_count"] == 0):
            report.violation(f"{label}: a VWAP must be there exactly when the venue traded")
        if row["volume_share"] is not None and (row["excluded"] or not 0 <= row["volume_share"] <= 1):
            report.violation(f"{label}: a volume share for an excluded venue, or outside [0, 1]")
        if row["seconds_since_last_trade"] is not None and row["seconds_since_last_trade"] < 0:
            report.violation(f"{label}: its last trade is after the window's end")
        ranges = row["missing_trade_id_ranges"]
        if row["missing_trade_ids"] < 0 or (row["missing_trade_ids"] > 0) != (ranges is not None):
            report.violation(f"{label}: missing_trade_ids and its ranges disagree")
    if consolidated is None:
        return
    venues_of = {}
    for (exchange, symbol, window_start), row in _newest_final(rows, "exchange", "symbol", "window_start").items():
        venues_of.setdefault((f"{row['base']}/{row['quote']}", window_start), []).append(row)
    for (pair, window_start), bar in _newest_final(consolidated.to_pylist(), "symbol", "window_start").items():
        label = f"bars_consolidated {pair} {window_start.isoformat()}"
        venues = venues_of.get((pair, window_start), [])
        included = sorted(f"{v['exchange']}:{v['symbol']}" for v in venues if not v["excluded"] and v["trade_count"])
        excluded = {f"{v['exchange']}:{v['symbol']}": v["exclusion_reason"] for v in venues if v["excluded"]}
        if sum(v["trade_count"] for v in venues) != bar["trade_count"]:
            report.violation(f"{label}: its trades are not its venues' quality rows' trades")
        if included != [c for c in bar["constituents"].split(",") if c] or excluded != json.loads(bar["excluded"]):
            report.violation(f"{label}: its constituents or exclusions are not its venues' quality rows'")
