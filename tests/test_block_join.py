"""The blocks join (``transforms.block_join``): the run's blocks settled (copies, conflicting copies,
retractions, branches) and transfers filled or rejected by them, against a plain-Python reference
of the rules; and the file reader's header carry, which lets batches after a file's first read a
CSV whose columns are in an order of their own."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.formats.ethereum_etl import HEADER_KEY, TOKEN_TRANSFER_EXPORT
from io_connectors.formats.token_transfer_records import parse_ethereum_etl_transfers
from io_connectors.source_formats import SOURCES
from io_connectors.sources import read_raw_batches
from schemas import arrow_schema
from tests.support.chain_records import block_hash, transfer, transfer_batch
from transforms.block_join import join_blocks, settle_blocks, with_block_provenance

T0 = 1_704_067_200


def block(number: int, fork: int = 0, seconds: int | None = None, retracted=False, publication=0, gas_used=1) -> dict:
    seconds = T0 + 12 * number if seconds is None else seconds
    return {
        "chain": "ethereum",
        "number": number,
        "hash": block_hash(number, fork),
        "parent_hash": block_hash(number - 1),
        "timestamp": seconds,
        "miner": "0x" + "11" * 20,
        "gas_used": gas_used,
        "gas_limit": 30_000_000,
        "base_fee_per_gas": None,
        "transaction_count": 3,
        "event_time": seconds * 1_000_000,
        "status": "finalized",
        "retracted": retracted,
        "publication": publication,
    }


def blocks_batch(rows: list[dict], source: str = "blocks.csv") -> pa.Table:
    schema = arrow_schema("block")
    columns = [
        pa.array([r[f.name] for r in rows], pa.int64()).cast(f.type)
        if f.name == "event_time"
        else pa.array([r[f.name] for r in rows], f.type)
        for f in schema
    ]
    offsets = list(range(1, len(rows) + 1))
    return with_block_provenance(pa.Table.from_arrays(columns, schema=schema), source, offsets, [b"line"] * len(rows))


def bare(row: dict, keep_hash=False, keep_time=False) -> dict:
    """The transfer as export_token_transfers writes it: no block hash or time (unless kept)."""
    return {
        **row,
        "block_hash": row["block_hash"] if keep_hash else None,
        "block_timestamp": row["block_timestamp"] if keep_time else None,
        "event_time": row["event_time"] if keep_time else None,
        "transfer_id": row["transfer_id"] if keep_hash else None,
    }


def test_each_rule_of_the_join():
    settled = settle_blocks(
        blocks_batch([block(1), block(2), block(3), block(3, fork=1), block(4), block(4, retracted=True)])
    )
    assert (settled.used, settled.duplicates, settled.dead_letters) == (6, 0, [])
    t = {n: transfer(1, 2, 3, 10, n, 0, T0 + 12 * n) for n in range(1, 6)}
    cases = [
        (bare(t[1]), ""),  # filled from block 1
        (bare(t[2], keep_time=True), ""),  # its own time agrees
        ({**bare(t[2], keep_time=True), "block_timestamp": T0, "event_time": T0 * 10**6}, "block_mismatch"),
        (bare(t[3]), "block_ambiguous"),  # two branches at height 3
        (bare(t[3], keep_hash=True), ""),  # names one of them
        (bare(t[4]), "block_not_found"),  # block 4 was retracted
        (bare(t[5]), "block_not_found"),
        (t[5], ""),  # complete without the blocks
        (bare(t[5], keep_hash=True), "block_not_found"),  # a hash, but no time to take
        (transfer(1, 2, 3, 10, 2, 1, T0 + 24, fork=7), "block_mismatch"),  # another hash at height 2
        ({**t[1], "block_number": 2}, "block_mismatch"),  # block 1's hash, at height 2
    ]
    batch = transfer_batch([row for row, _ in cases])
    joined = join_blocks(batch, settled.lookup)
    expected = [reason for _, reason in cases]
    assert dict(zip(joined.rejected_rows.tolist(), joined.reasons)) == {
        i: reason for i, reason in enumerate(expected) if reason
    }
    assert all(joined.messages)
    got = joined.batch.to_pylist()
    for i, full in {0: t[1], 1: t[2], 4: t[3], 7: t[5]}.items():  # the rows kept, as they should be filled
        assert {k: got[i][k] for k in ("block_hash", "block_timestamp", "transfer_id")} == {
            k: full[k] for k in ("block_hash", "block_timestamp", "transfer_id")
        }
        assert got[i]["event_time"].timestamp() * 1_000_000 == full["event_time"]
    assert joined.batch.schema == batch.schema


def test_copies_of_a_block_are_duplicates_and_a_differing_copy_a_dead_letter_with_the_first_kept():
    first = blocks_batch([block(1), block(2)], "a.csv")
    again = blocks_batch([block(1), block(2, gas_used=9), block(2, publication=1)], "b.csv")
    settled = settle_blocks(pa.concat_tables([again, first]))  # gathered in any order
    assert (settled.used, settled.duplicates) == (3, 1)
    [letter] = settled.dead_letters
    assert (letter["reason"], letter["source"], letter["source_offset"]) == ("conflicting_duplicate", "b.csv", 2)
    assert '"gas_used": 9' in letter["payload_string"]
    assert settled.lookup.column("number").to_pylist() == [1, 2]


def test_a_block_retracted_and_then_published_again_is_live():
    settled = settle_blocks(
        blocks_batch([block(1), block(1, retracted=True), block(1, publication=1), block(2), block(2, retracted=True)])
    )
    assert settled.lookup.column("number").to_pylist() == [1]


# ---------------------------------------------------------------------- against a reference

blocks_drawn = st.lists(
    st.tuples(
        st.integers(0, 4),  # number
        st.integers(0, 1),  # fork
        st.integers(0, 1),  # publication
        st.booleans(),  # retracted
        st.sampled_from([0, 0, 0, 5]),  # seconds off the block's own time: a conflicting copy
        st.integers(0, 1),  # source
    ),
    max_size=14,
)
transfers_drawn = st.lists(
    st.tuples(
        st.integers(0, 5),  # block number
        st.sampled_from([None, 0, 1]),  # the fork whose hash it names, if any
        st.sampled_from([None, 0, 3]),  # seconds off its block's time, if it gives a time
        st.integers(0, 5),  # the number of the block whose hash it names
    ),
    min_size=1,
    max_size=14,
)


def reference_lookup(drawn) -> dict:
    """{(chain, number): {hash: seconds}} of the live blocks, settled by the rules in plain Python."""
    records = sorted(
        (
            (f"s{source}.csv", offset, block(n, fork, T0 + 12 * n + off, retracted, publication))
            for offset, (n, fork, publication, retracted, off, source) in enumerate(drawn)
        ),
        key=lambda r: r[:2],
    )
    kept: dict = {}
    for _, _, b in records:
        kept.setdefault((b["chain"], b["hash"], b["publication"], b["retracted"]), b)
    latest: dict = {}
    for chain, bhash, publication, _ in kept:
        latest[(chain, bhash)] = max(latest.get((chain, bhash), -1), publication)
    live: dict = {}
    for (chain, bhash, publication, retracted), b in kept.items():
        withdrawn = (chain, bhash, publication, True) in kept
        if publication == latest[(chain, bhash)] and not retracted and not withdrawn:
            live.setdefault((chain, b["number"]), {})[bhash] = b["timestamp"]
    return live


def reference_join(row: dict, live: dict) -> tuple[str, str | None, int | None]:
    """(reason or '', block hash, block time) of a transfer by the module's table."""
    at_height = live.get(("ethereum", row["block_number"]), {})
    by_hash = {h: (n, s) for (_, n), blocks in live.items() for h, s in blocks.items()}
    own_hash, own_time = row["block_hash"], row["block_timestamp"]
    if own_hash is None:
        if not at_height:
            return "block_not_found", None, None
        if len(at_height) > 1:
            return "block_ambiguous", None, None
        [(found_hash, seconds)] = at_height.items()
    elif own_hash in by_hash:
        number, seconds = by_hash[own_hash]
        if number != row["block_number"]:
            return "block_mismatch", None, None
        found_hash = own_hash
    elif at_height:
        return "block_mismatch", None, None
    elif own_time is None:
        return "block_not_found", None, None
    else:
        return "", own_hash, own_time
    if own_time is not None and own_time != seconds:
        return "block_mismatch", None, None
    return "", found_hash, seconds


@settings(max_examples=150, deadline=None)
@given(blocks_drawn, transfers_drawn)
def test_the_join_follows_the_rules_of_a_plain_python_reference(drawn_blocks, drawn_transfers):
    parts = [
        blocks_batch([block(n, fork, T0 + 12 * n + off, retracted, publication)], f"s{source}.csv")
        for n, fork, publication, retracted, off, source in drawn_blocks
    ]
    # each block its own batch, offsets by draw order, so sorting by (source, offset) is the reference's
    parts = [
        part.set_column(part.schema.get_field_index("source_offset"), "source_offset", pa.array([i], pa.int64()))
        for i, part in enumerate(parts)
    ]
    settled = settle_blocks(pa.concat_tables(parts) if parts else blocks_batch([]))
    live = reference_lookup(drawn_blocks)
    rows = []
    for i, (n, fork, off, named_number) in enumerate(drawn_transfers):
        row = transfer(1, 2, 3, 10, n, i, T0 + 12 * n)
        if fork is None:
            row = bare(row)
        else:
            named = block_hash(named_number, fork)
            row = {**row, "block_hash": named, "transfer_id": f"{named}_{i}"}
        if off is None:
            row = {**row, "block_timestamp": None, "event_time": None}
        else:
            row = {**row, "block_timestamp": T0 + 12 * n + off, "event_time": (T0 + 12 * n + off) * 1_000_000}
        rows.append(row)
    joined = join_blocks(transfer_batch(rows), settled.lookup)
    reasons = dict(zip(joined.rejected_rows.tolist(), joined.reasons))
    got = joined.batch.to_pylist()
    for i, row in enumerate(rows):
        reason, expected_hash, seconds = reference_join(row, live)
        assert reasons.get(i, "") == reason, (row, live)
        if not reason:
            assert (got[i]["block_hash"], got[i]["block_timestamp"]) == (expected_hash, seconds)
            assert got[i]["transfer_id"] == f"{expected_hash}_{row['log_index']}"
            assert int(got[i]["event_time"].timestamp()) == seconds
    assert settled.used + settled.duplicates + len(settled.dead_letters) == len(drawn_blocks)


# ---------------------------------------------------------------------- the header carry


def test_every_later_batch_of_a_csv_file_carries_its_header_so_columns_in_any_order_are_read(tmp_path):
    order = ["value", "block_number", "token_address", "log_index", "to_address", "transaction_hash", "from_address"]
    assert sorted(order) == sorted(TOKEN_TRANSFER_EXPORT.etl_columns)  # 7 fields: the headerless layout's count
    rows = [transfer(1, 2, 3, 1000 + i, 100 + i, i) for i in range(23)]
    path = tmp_path / "token_transfers.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(",".join(order) + "\n" + "".join(",".join(str(r[c]) for c in order) + "\n" for r in rows))
    source = SOURCES["ethereum-etl-token-transfers"]
    batches = list(read_raw_batches(source, str(path), batch_rows=5))
    assert len(batches) == 5
    assert HEADER_KEY not in batches[0].extra
    assert all(raw.extra[HEADER_KEY] == ",".join(order).encode() for raw in batches[1:])
    parsed = [parse_ethereum_etl_transfers(raw) for raw in batches]
    assert [letter for _, letters in parsed for letter in letters] == []
    table = pa.concat_tables([table for table, _ in parsed])
    assert table.column("value").to_pylist() == [r["value"] for r in rows]
    assert table.column("block_number").to_pylist() == [r["block_number"] for r in rows]
    assert np.array_equal(table.column("source_offset").to_numpy(), np.arange(2, 25))


def test_formats_without_a_header_get_none_carried(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    path.write_text("".join(f"{i},42000.0,0.5,{i},{i},{1704067200000 + i},false,true\n" for i in range(7)))
    batches = list(read_raw_batches(SOURCES["binance-aggtrades"], str(path), batch_rows=3))
    assert len(batches) == 3 and all(HEADER_KEY not in raw.extra for raw in batches)


def test_a_json_lines_file_carries_no_header_so_a_stray_csv_line_reads_as_in_the_first_batch(tmp_path):
    rows = [transfer(1, 2, 3, 1000 + i, 100 + i, i) for i in range(9)]
    columns = TOKEN_TRANSFER_EXPORT.etl_columns
    stray = ",".join(str(rows[0][c]) for c in columns)  # a CSV line in ethereum-etl's order
    lines = [json.dumps({"type": "token_transfer", **{c: row[c] for c in columns}}) for row in rows[1:]]
    path = tmp_path / "token_transfers.json"
    path.write_text("\n".join([*lines[:6], stray, *lines[6:]]) + "\n")
    batches = list(read_raw_batches(SOURCES["ethereum-etl-token-transfers"], str(path), batch_rows=4))
    assert all(HEADER_KEY not in raw.extra for raw in batches)
    parsed = [parse_ethereum_etl_transfers(raw) for raw in batches]
    assert [letter for _, letters in parsed for letter in letters] == []
    values = pa.concat_tables([table for table, _ in parsed]).column("value").to_pylist()
    assert sorted(values) == sorted(row["value"] for row in rows)
