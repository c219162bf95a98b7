"""Token transfers for tests: contract-shaped rows, a batch of them, and a plain-Python reference
of what the chain computations should give."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pyarrow as pa

from io_connectors.raw_batch import RawBatch
from schemas import arrow_schema
from transforms.token_transfers import TRANSFER_FIELDS, with_provenance

T0_SECONDS = 1_704_067_200  # 2024-01-01T00:00:00Z


def address(n: int) -> str:
    return "0x" + hashlib.sha256(b"address%d" % n).hexdigest()[:40]


def block_hash(number: int, fork: int = 0) -> str:
    return "0x" + hashlib.sha256(b"block%d/%d" % (number, fork)).hexdigest()


def transfer(
    token: int | str,
    sender: int | str,
    receiver: int | str,
    value: int,
    block: int,
    log_index: int,
    seconds: int | None = None,
    fork: int = 0,
    retracted: bool = False,
    chain: str = "ethereum",
    status: str = "finalized",
    publication: int = 0,
) -> dict:
    """A contract row. Ints name addresses (``address(n)``); a block's time defaults to 12 s a block."""
    bhash = block_hash(block, fork)
    seconds = T0_SECONDS + 12 * block if seconds is None else seconds
    return {
        "chain": chain,
        "token_address": token if isinstance(token, str) else address(10_000 + token),
        "from_address": sender if isinstance(sender, str) else address(sender),
        "to_address": receiver if isinstance(receiver, str) else address(receiver),
        "value": str(value),
        "transaction_hash": "0x" + hashlib.sha256(b"tx%s/%d" % (bhash.encode(), log_index)).hexdigest(),
        "log_index": log_index,
        "block_number": block,
        "block_hash": bhash,
        "block_timestamp": seconds,
        "event_time": seconds * 1_000_000,
        "transfer_id": f"{bhash}_{log_index}",
        "status": status,
        "retracted": retracted,
        "publication": publication,
    }


def retraction(row: dict) -> dict:
    return {**row, "retracted": True}


def republication(row: dict) -> dict:
    """The record published again after a reorg back to its block, which had been retracted."""
    return {**row, "retracted": False, "publication": row["publication"] + 1}


def token_address(token: int) -> str:
    return address(10_000 + token)


def transfers_table(rows: list[dict]) -> pa.Table:
    schema = arrow_schema("token_transfer")
    columns = {name: [row[name] for row in rows] for name in TRANSFER_FIELDS}
    arrays = [
        pa.array(columns[f.name], pa.int64()).cast(f.type)
        if f.name == "event_time"
        else pa.array(columns[f.name], f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def transfer_batch(rows: list[dict], source: str = "test", first_offset: int = 1) -> pa.Table:
    return with_provenance(transfers_table(rows), source, list(range(first_offset, first_offset + len(rows))))


def raw_transfers(rows: list[dict], source: str = "test") -> RawBatch:
    """A raw batch whose table is already parsed: ``parse_table_transfers`` passes it on."""
    return RawBatch(source=source, table=transfers_table(rows))


def parse_table_transfers(raw: RawBatch):
    return with_provenance(raw.table, raw.source, raw.table_row_numbers()), []


def canonical(rows: list[dict]) -> list[dict]:
    """The transfers a consumer keeps: copies dropped, and every publication of a transfer that a
    retraction of the same publication withdraws."""
    seen, originals, withdrawn = set(), {}, set()
    for row in rows:
        key = (row["chain"], row["transfer_id"], row["publication"], row["retracted"])
        if key in seen:
            continue
        seen.add(key)
        if row["retracted"]:
            withdrawn.add(key[:3])
        else:
            originals[key[:3]] = row
    return [row for key, row in originals.items() if key not in withdrawn]


def reference_activity(rows: list[dict], interval_us: int, decimals: dict | None = None) -> dict:
    """{(chain, token, window_start): figures} over the canonical transfers."""
    out: dict = {}
    for row in canonical(rows):
        start = row["event_time"] // interval_us * interval_us
        figures = out.setdefault(
            (row["chain"], row["token_address"], start),
            {"transfer_count": 0, "value": 0, "senders": set(), "receivers": set()},
        )
        figures["transfer_count"] += 1
        figures["value"] += int(row["value"])
        figures["senders"].add(row["from_address"])
        figures["receivers"].add(row["to_address"])
    return {
        key: {
            "transfer_count": f["transfer_count"],
            "volume_raw": str(f["value"]),
            "unique_senders": len(f["senders"]),
            "unique_receivers": len(f["receivers"]),
            "volume": None
            if (decimals or {}).get(key[1]) is None
            else float(Fraction(f["value"], 10 ** decimals[key[1]])),
        }
        for key, f in out.items()
    }


def flow_figures(flows) -> dict:
    """Rows of ``exchange_flows`` (window starts as datetimes or microseconds) as ``reference_flows``
    keys them: {(chain, token, window_start µs, entity): (inflow, outflow, inflow count, outflow count)},
    rows with no flow left out."""
    figures = {}
    for r in flows:
        start = r["window_start"]
        start = start if isinstance(start, int) else int(start.timestamp()) * 1_000_000
        figure = (int(r["inflow_raw"]), int(r["outflow_raw"]), r["inflow_count"], r["outflow_count"])
        if any(figure):
            figures[(r["exchange"], r["token_address"], start, r["entity"])] = figure
    return figures


def reference_flows(rows: list[dict], interval_us: int, labels: dict[str, str]) -> dict:
    """{(chain, token, window_start, entity): (inflow, outflow, inflow count, outflow count)}."""
    out: dict = {}
    for row in canonical(rows):
        start = row["event_time"] // interval_us * interval_us
        source, target = labels.get(row["from_address"]), labels.get(row["to_address"])
        if source == target:
            continue
        value = int(row["value"])
        if target is not None:
            f = out.setdefault((row["chain"], row["token_address"], start, target), [0, 0, 0, 0])
            f[0] += value
            f[2] += 1
        if source is not None:
            f = out.setdefault((row["chain"], row["token_address"], start, source), [0, 0, 0, 0])
            f[1] += value
            f[3] += 1
    return {key: tuple(f) for key, f in out.items()}
