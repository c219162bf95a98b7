"""Token activity and exchange flows from ERC-20 transfers, against a plain-Python reference over
the final canonical transfers: copies dropped, each transfer a retraction withdraws left out."""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.accounting import counters_of
from io_connectors.avro_wire import encode
from io_connectors.formats.token_transfer_records import parse_token_transfer_messages
from io_connectors.raw_batch import RawBatch
from runners.profiles import in_process_runner
from schemas import field_names
from tests.support.chain_records import (
    T0_SECONDS,
    address,
    flow_figures,
    parse_table_transfers,
    raw_transfers,
    reference_activity,
    reference_flows,
    republication,
    retraction,
    token_address,
    transfer,
    transfer_batch,
)
from tests.support.helpers import COLLECTED, Collect
from transforms.bar_spec import BarSpec
from transforms.chain_spec import ChainSpec, Token
from transforms.token_aggregates import merge, settle, summarize
from transforms.token_transfers import (
    RECORD_SCHEMA,
    invalid_transfer_rows,
    limbs_value,
    transfer_hashes,
    value_limbs,
)
from transforms.trades_to_bars import TradesToBars

MINUTE_US = 60_000_000
LABELS = {address(1): "binance", address(2): "binance", address(3): "kraken", address(4): "coinbase"}
TOKENS = (Token("ethereum", token_address(0), "USDT", 6), Token("ethereum", token_address(1), "WETH", 18))


def chain_spec(labels=LABELS) -> ChainSpec:
    return ChainSpec(tokens=TOKENS, labels=None if labels is None else tuple(labels.items()))


values = st.one_of(st.integers(0, 10**6), st.integers(0, 2**256 - 1), st.just(2**256 - 1))


def flip_flops(row: dict, records: int) -> list[dict]:
    """The first ``records`` records the follower publishes of a transfer whose block reorgs take
    out and bring back again and again: publication 0, its retraction, publication 1, its
    retraction, ... The transfer is in the final chain when the last is a publication."""
    history = [row]
    while len(history) < records:
        last = history[-1]
        history.append(republication(last) if last["retracted"] else retraction(last))
    return history


@st.composite
def transfers_with_retractions(draw):
    """Transfers of three tokens between eight addresses over a few blocks, some withdrawn by a
    retraction (and some of those brought back by a reorg to their branch, and maybe withdrawn
    again), some re-delivered, in any order of arrival."""
    rows = []
    for block in range(draw(st.integers(1, 8))):
        for log_index in range(draw(st.integers(0, 6))):
            row = transfer(
                draw(st.integers(0, 2)),
                draw(st.integers(0, 7)),
                draw(st.integers(0, 7)),
                draw(values),
                block,
                log_index,
            )
            rows += flip_flops(row, draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4, 5])))
    rows += [row for row in rows if draw(st.integers(0, 4)) == 0]  # re-deliveries
    return draw(st.permutations(rows))


def _settled_by_token(parts_by_token: dict, labels, withdraw_unseen=False) -> dict:
    return {token: settle(merge(parts), labels, withdraw_unseen) for token, parts in parts_by_token.items()}


def _deduplicated(rows: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for row in rows:
        identity = (row["transfer_id"], row["publication"], row["retracted"])
        if identity not in seen:
            seen.add(identity)
            kept.append(row)
    return kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transfers_with_retractions(), st.data())
def test_partials_merged_in_any_grouping_give_the_canonical_figures(rows, data):
    spec = chain_spec()
    unique = _deduplicated(rows)
    records = transfer_batch(unique).select(RECORD_SCHEMA.names) if unique else None
    cuts = sorted(data.draw(st.lists(st.integers(0, len(unique)), max_size=4)))
    parts: dict = {}
    for start, end in zip([0, *cuts], [*cuts, len(unique)]):
        for token, window in summarize(records.slice(start, end - start), spec.label_index).items() if unique else ():
            parts.setdefault(token, []).append(window)
    for token_parts in parts.values():
        data.draw(st.randoms()).shuffle(token_parts)
    settled = _settled_by_token(parts, spec.label_index)
    expected = reference_activity(rows, 10**18)
    by_token = {key[1]: figures for key, figures in expected.items()}
    for token, figures in settled.items():
        reference = by_token.get(
            token, {"transfer_count": 0, "volume_raw": "0", "unique_senders": 0, "unique_receivers": 0}
        )
        assert figures.transfer_count == reference["transfer_count"]
        assert str(figures.value) == reference["volume_raw"]
        assert (figures.unique_senders, figures.unique_receivers) == (
            reference["unique_senders"],
            reference["unique_receivers"],
        )
        originals = sum(1 for row in unique if row["token_address"] == token and not row["retracted"])
        retractions = sum(1 for row in unique if row["token_address"] == token and row["retracted"])
        assert figures.transfer_count + figures.retracted_count == originals + retractions
        flows = {key[3]: f for key, f in reference_flows(rows, 10**18, LABELS).items() if key[1] == token}
        assert {entity: f for entity, f in figures.flows.items() if any(f)} == flows
    assert set(by_token) <= set(settled)


@settings(max_examples=100, deadline=None)
@given(transfers_with_retractions(), st.data())
def test_discarding_panes_sum_to_the_canonical_figures_when_retractions_follow_their_transfers(rows, data):
    """A discarding pane holds what arrived since the last; a retraction in a later pane than its
    transfer withdraws it there, so the panes' changes add up to the canonical figures."""
    spec = chain_spec()
    unique = _deduplicated(rows)
    unique.sort(key=lambda row: row["retracted"])  # every transfer before any retraction
    cut = data.draw(st.integers(0, len(unique)))
    totals: dict = {}
    for pane in (unique[:cut], unique[cut:]):
        if not pane:
            continue
        for token, window in summarize(transfer_batch(pane).select(RECORD_SCHEMA.names), spec.label_index).items():
            figures = settle(window, spec.label_index, withdraw_unseen=True)
            total = totals.setdefault(token, [0, 0])
            total[0] += figures.transfer_count
            total[1] += figures.value
    expected = {key[1]: f for key, f in reference_activity(rows, 10**18).items()}
    for token, (count, value) in totals.items():
        reference = expected.get(token, {"transfer_count": 0, "volume_raw": "0"})
        assert (count, str(value)) == (reference["transfer_count"], reference["volume_raw"])


@st.composite
def reorged_back_and_forth(draw):
    """(records as they arrive, the final chain's transfers): each transfer's block is taken out
    and brought back by reorgs a number of times (A, B, A again, ...), some records re-delivered,
    in any order."""
    arrived, final = [], []
    for log_index in range(draw(st.integers(1, 12))):
        row = transfer(
            draw(st.integers(0, 1)), draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(values), 1, log_index
        )
        records = draw(st.integers(1, 6))
        arrived += flip_flops(row, records)
        if records % 2:  # ends published: in the final chain
            final.append(row)
    arrived += [row for row in arrived if draw(st.integers(0, 2)) == 0]
    return draw(st.permutations(arrived)), final


def _final_chain_figures(final: list[dict]) -> dict:
    """Plain Python over the final chain's transfers: {token: (count, value, senders, receivers)}."""
    figures: dict = {}
    for row in final:
        count, value, senders, receivers = figures.get(row["token_address"], (0, 0, set(), set()))
        figures[row["token_address"]] = (count + 1, value + int(row["value"]), senders, receivers)
        senders.add(row["from_address"])
        receivers.add(row["to_address"])
    return {token: (c, v, len(s), len(r)) for token, (c, v, s, r) in figures.items()}


@settings(max_examples=100, deadline=None)
@given(reorged_back_and_forth(), st.data())
def test_a_transfer_reorged_out_and_back_counts_once_if_its_block_is_final(arrival, data):
    """Dedupe by the records' own id and content hashes (a re-publication is new, a copy of any
    record is not), then partials in any grouping: the final chain's figures, each transfer once."""
    rows, final = arrival
    records = transfer_batch(rows).select(RECORD_SCHEMA.names)
    _transfer, id_hash, content = transfer_hashes(records)
    seen, unique = {}, []
    for i, (identity, body) in enumerate(zip(id_hash.tolist(), content.tolist())):
        assert seen.setdefault(identity, body) == body  # copies agree on their content
        if len(seen) > len(unique):
            unique.append(i)
    assert len(unique) == len({(r["transfer_id"], r["publication"], r["retracted"]) for r in rows})
    kept = records.take(unique)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(unique)), max_size=3)))
    parts: dict = {}
    for start, end in zip([0, *cuts], [*cuts, len(unique)]):
        piece = kept.slice(start, end - start)
        for token, window in summarize(piece, None, id_hash[unique][start:end]).items():
            parts.setdefault(token, []).append(window)
    settled = {token: settle(merge(windows), None) for token, windows in parts.items()}
    got = {
        token: (f.transfer_count, f.value, f.unique_senders, f.unique_receivers)
        for token, f in settled.items()
        if f.transfer_count
    }
    assert got == _final_chain_figures(final)
    assert all(f.unmatched_retractions == 0 for f in settled.values())


@given(st.lists(st.integers(0, 2**256 - 1), min_size=1, max_size=50))
def test_value_limbs_sum_exactly(numbers):
    limbs = value_limbs(pa.array([str(n) for n in numbers]))
    assert limbs_value(limbs.sum(axis=0)) == sum(numbers)


def test_contract_breaches_are_rejected_with_their_reason():
    good = transfer(0, 1, 2, 5, block=1, log_index=0)
    rows = [
        good,
        {**good, "value": "01"},
        {**good, "value": str(2**256)},
        {**good, "to_address": good["to_address"].upper().replace("0X", "0x")},
        {**good, "transfer_id": good["transfer_id"] + "9"},
        {**good, "block_hash": None, "transfer_id": None},
        {**good, "event_time": good["event_time"] + 1},
        {**good, "status": "pending"},
        {**good, "value": ""},
        {**good, "value": "-1"},
        {**good, "value": "9" * 79},
        {**good, "transaction_hash": good["transaction_hash"][:-1] + "G"},
    ]
    reasons = invalid_transfer_rows(transfer_batch(rows), 0, 2**62).per_row().tolist()
    assert reasons == [
        "",
        "bad_value",
        "bad_value",
        "bad_address",
        "bad_transfer_id",
        "missing_block_hash",
        "inconsistent_event_time",
        "unknown_status",
        "bad_value",
        "bad_value",
        "bad_value",
        "bad_hash",
    ]


# --- through TradesToBars on a runner


def _run_batch(batches, spec: BarSpec):
    pipeline = beam.Pipeline(runner=in_process_runner())
    raw = pipeline | beam.Create(batches, reshuffle=False)
    results = {"token_transfers": raw} | TradesToBars(spec, None, transfer_parser=parse_table_transfers)
    results["tables"]["token_activity"] | "Activity" >> beam.Map(Collect("activity"))
    if "exchange_flows" in results["tables"]:
        results["tables"]["exchange_flows"] | "Flows" >> beam.Map(Collect("flows"))
    else:
        Collect("flows")
    results["dead_letters"] | "Dead" >> beam.Map(Collect("dead"))
    result = pipeline.run()
    result.wait_until_finish()
    return list(COLLECTED["activity"]), list(COLLECTED["flows"]), list(COLLECTED["dead"]), counters_of(result)


def _random_chain_day(seed: int, blocks: int = 40) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        transfer(rng.randrange(3), rng.randrange(8), rng.randrange(8), rng.randrange(10 ** rng.randrange(1, 40)), b, i)
        for b in range(blocks)
        for i in range(rng.randrange(6))
    ]
    rows = [record for row in rows for record in flip_flops(row, rng.choice([1] * 16 + [2, 2, 3, 4]))]
    rows += [row for row in rows if rng.random() < 0.1]
    rng.shuffle(rows)
    return rows


def test_backfilled_tables_equal_the_reference_and_every_transfer_is_accounted_for():
    rows = _random_chain_day(7)
    spec = BarSpec.of("1m", time_bars=False, chain=chain_spec())
    activity, flows, dead, counters = _run_batch([raw_transfers(rows[:70]), raw_transfers(rows[70:])], spec)
    assert dead == []
    assert all(set(row) == set(field_names("token_activity")) for row in activity)
    assert all(set(row) == set(field_names("exchange_flow")) for row in flows)
    decimals = {token.address: token.decimals for token in TOKENS}
    expected = reference_activity(rows, MINUTE_US, decimals)
    got = {(row["exchange"], row["token_address"], row["window_start"]): row for row in activity}
    assert {key: {name: got[key][name] for name in figures} for key, figures in expected.items()} == expected
    assert all(row["transfer_count"] == 0 for key, row in got.items() if key not in expected)
    assert {row["token_known"] for row in activity if row["token_address"] == token_address(2)} == {False}
    assert all(row["volume"] is None for row in activity if row["token_address"] == token_address(2))
    expected_flows = reference_flows(rows, MINUTE_US, LABELS)
    assert flow_figures(flows) == expected_flows
    assert all(int(r["netflow_raw"]) == int(r["inflow_raw"]) - int(r["outflow_raw"]) for r in flows)
    # Records read = in aggregates + retracted + duplicates (+ dead letters: none here).
    unique = counters["token_transfer.unique_trades"]
    assert counters["token_transfer.records_in"] == len(rows) == unique + counters["token_transfer.duplicates"]
    assert sum(r["transfer_count"] + r["retracted_count"] for r in activity) == unique


def _at(micros: int) -> Timestamp:
    return Timestamp(micros=micros)


def _run_stream(stream: TestStream, spec: BarSpec):
    options = PipelineOptions([], streaming=True)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as pipeline:
        results = {"token_transfers": pipeline | stream} | TradesToBars(
            spec, None, transfer_parser=parse_table_transfers
        )
        results["tables"]["token_activity"] | "Activity" >> beam.Map(Collect("activity"))
        results["dead_letters"] | "Dead" >> beam.Map(Collect("dead"))
    return sorted(COLLECTED["activity"], key=lambda r: (r["window_start"], r["pane_index"])), COLLECTED["dead"]


def _batch_at(rows: list[dict]):
    return beam.window.TimestampedValue(raw_transfers(rows), _at(rows[0]["event_time"]))


def test_a_retraction_after_the_on_time_pane_revises_it_in_a_late_pane():
    spec = BarSpec.of("1m", allowed_lateness_seconds=600, time_bars=False, chain=chain_spec(labels=None))
    start = T0_SECONDS * 1_000_000
    a = transfer(0, 1, 2, 10, block=1, log_index=0)
    b = transfer(0, 3, 2, 32, block=2, log_index=0)
    stream = (
        TestStream()
        .advance_watermark_to(_at(start))
        .add_elements([_batch_at([a, b])])
        .advance_watermark_to(_at(start + MINUTE_US + 1_000_000))  # the window closes on time
        .add_elements([_batch_at([retraction(b)])])  # a reorg orphaned b's block
        .add_elements([_batch_at([retraction(b)])])  # and the retraction is re-delivered
        .advance_watermark_to_infinity()
    )
    panes, dead = _run_stream(stream, spec)
    assert dead == []
    on_time = [p for p in panes if p["pane_timing"] == "ON_TIME"]
    late = [p for p in panes if p["pane_timing"] == "LATE"]
    assert [(p["transfer_count"], p["volume_raw"], p["unique_senders"]) for p in on_time] == [(2, "42", 2)]
    assert late and (late[-1]["transfer_count"], late[-1]["volume_raw"], late[-1]["unique_senders"]) == (1, "10", 1)
    assert late[-1]["retracted_count"] == 2 and late[-1]["pane_index"] > on_time[0]["pane_index"]


def test_a_reorg_back_to_the_first_branch_restores_its_transfer_in_a_late_pane():
    """A, B, A again: t in block 2a counted on time; the reorg to 2b withdraws it for b; the reorg
    back to 2a withdraws b and publishes t again (publication 1), and copies of every record
    arrive once more: the final pane counts t once, as the final chain holds it."""
    spec = BarSpec.of("1m", allowed_lateness_seconds=600, time_bars=False, chain=chain_spec(labels=None))
    start = T0_SECONDS * 1_000_000
    a = transfer(0, 1, 2, 10, block=1, log_index=0)
    t = transfer(0, 3, 2, 32, block=2, log_index=0)
    b = transfer(0, 4, 2, 5, block=2, log_index=0, fork=1)
    stream = (
        TestStream()
        .advance_watermark_to(_at(start))
        .add_elements([_batch_at([a, t])])
        .advance_watermark_to(_at(start + MINUTE_US + 1_000_000))  # the window closes on time
        .add_elements([_batch_at([retraction(t), b])])  # the reorg to 2b
        .add_elements([_batch_at([retraction(b), republication(t)])])  # and back to 2a
        .add_elements([_batch_at([t, retraction(t), b, retraction(b), republication(t)])])  # re-delivered
        .advance_watermark_to_infinity()
    )
    panes, dead = _run_stream(stream, spec)
    assert dead == []
    on_time = [p for p in panes if p["pane_timing"] == "ON_TIME"]
    late = [p for p in panes if p["pane_timing"] == "LATE"]
    assert [(p["transfer_count"], p["volume_raw"]) for p in on_time] == [(2, "42")]
    final = late[-1]
    assert (final["transfer_count"], final["volume_raw"], final["unique_senders"]) == (2, "42", 2)
    assert (final["retracted_count"], final["unmatched_retractions"]) == (4, 0)  # two retractions, two withdrawn


def test_kafka_messages_carry_the_publication():
    t = transfer(0, 1, 2, 5, block=1, log_index=0)
    messages = [encode(m, "token_transfer") for m in (t, t, retraction(t), republication(t))]
    raw = RawBatch(source="kafka", payloads=pa.array(messages, pa.binary()), line_numbers=np.arange(4))
    batch, dead = parse_token_transfer_messages(raw)
    assert dead == []
    assert batch.column("publication").to_pylist() == [0, 0, 0, 1]
    assert invalid_transfer_rows(batch, 0, 2**62).per_row().tolist() == [""] * 4
    _transfer, id_hash, _content = transfer_hashes(batch)
    assert id_hash[0] == id_hash[1] and len(set(id_hash[1:].tolist())) == 3  # a copy; then three records


def test_a_transfer_past_the_allowed_lateness_is_a_dead_letter():
    spec = BarSpec.of("1m", allowed_lateness_seconds=60, time_bars=False, chain=chain_spec(labels=None))
    start = T0_SECONDS * 1_000_000
    a = transfer(0, 1, 2, 10, block=1, log_index=0)
    late = transfer(0, 1, 2, 99, block=2, log_index=0)
    after = transfer(0, 1, 2, 7, block=60, log_index=0)
    stream = (
        TestStream()
        .advance_watermark_to(_at(start))
        .add_elements([_batch_at([a])])
        .advance_watermark_to(_at(start + 10 * MINUTE_US))  # [0, 1m) expired at 2m
        .advance_processing_time(1)
        .add_elements([_batch_at([late])])
        .add_elements([_batch_at([after])])
        .advance_watermark_to_infinity()
    )
    panes, dead = _run_stream(stream, spec)
    assert [(d["reason"], d["stage"], d["exchange"], d["symbol"]) for d in dead] == [
        ("too_late", "lateness", "ethereum", token_address(0))
    ]
    assert late["transfer_id"] in dead[0]["payload_string"]
    assert sorted(p["volume_raw"] for p in panes if p["pane_timing"] == "ON_TIME") == ["10", "7"]
