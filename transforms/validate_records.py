"""Validate: records that break their type's rules become dead letters.

The trade rules are here too: a parsed trade must have a price, amount and notional in range, a
sane time and a known side."""

from __future__ import annotations

import time
from collections import Counter

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.dead_letter_counts import count_dead_letter
from transforms.row_reasons import FirstReasons
from transforms.sized_coders import ArrowTableCoder
from transforms.trade_batch import rows_dead_letters, take_rows, without_payload
from transforms.trade_chunk import SIDE_NAMES

# Bitcoin's genesis block: no crypto trade happened before it.
EARLIEST_TRADE_MICROS = 1_230_940_800_000_000  # 2009-01-03T00:00:00Z
FUTURE_TOLERANCE_MICROS = 86_400 * 1_000_000
# Prices, amounts and notionals (price x amount) must lie in [SMALLEST_VALUE, LARGEST_VALUE].
# Subnormal values have lost precision (a vwap of 1e-320 trades comes out 0.0), so the floor is the
# smallest normal float. The ceiling keeps every sum of a bar finite however many trades fall in
# its window: a trade count is an int64, and 2**63 values of at most 1e280 sum to under 1e299.
# Being a rule about each trade alone, it gives a backfill and a stream the same dead letters.
SMALLEST_VALUE = float(np.finfo(np.float64).tiny)  # 2.2250738585072014e-308
LARGEST_VALUE = 1e280


def default_time_bounds() -> tuple[int, int]:
    """Trades before 2009-01-03 or more than a day after pipeline construction are impossible."""
    return EARLIEST_TRADE_MICROS, int(time.time() * 1_000_000) + FUTURE_TOLERANCE_MICROS


def _in_range(values: np.ndarray) -> np.ndarray:
    return (values >= SMALLEST_VALUE) & (values <= LARGEST_VALUE)


def invalid_rows(batch: pa.Table, min_time_us: int, max_time_us: int) -> FirstReasons:
    """The first reason each row is invalid, checked in order of precedence."""
    reasons = FirstReasons(batch.num_rows)
    for column in ("exchange", "symbol", "trade_id"):
        values = batch.column(column)
        empty = pc.or_kleene(pc.is_null(values), pc.equal(pc.binary_length(values), 0))  # bytes: no UTF-8 scan
        reasons.flag(pc.fill_null(empty, True).to_numpy(zero_copy_only=False), f"missing_{column}")
    prices = batch.column("price").to_numpy(zero_copy_only=False).astype(float)
    amounts = batch.column("amount").to_numpy(zero_copy_only=False).astype(float)
    for column, values, reason in (("price", prices, "bad_price"), ("amount", amounts, "bad_amount")):
        with np.errstate(invalid="ignore"):
            reasons.flag(~np.isfinite(values), f"non_finite_{column}")
            reasons.flag(~(values > 0), reason)
            reasons.flag(~_in_range(values), f"{column}_out_of_range")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        notionals = prices * amounts
        reasons.flag(~(notionals <= LARGEST_VALUE), "notional_overflow")
        reasons.flag(~(notionals >= SMALLEST_VALUE), "notional_underflow")
    times = batch.column("event_time").cast(pa.int64())
    reasons.flag(pc.is_null(times).to_numpy(zero_copy_only=False), "missing_event_time")
    t = pc.fill_null(times, 0).to_numpy(zero_copy_only=False)
    reasons.flag((t < min_time_us) | (t > max_time_us), "timestamp_out_of_range")
    known_side = pc.fill_null(pc.is_in(batch.column("side"), pa.array(SIDE_NAMES)), False)
    reasons.flag(~known_side.to_numpy(zero_copy_only=False), "unknown_side")
    return reasons


def invalid_reasons(batch: pa.Table, min_time_us: int, max_time_us: int) -> np.ndarray:
    """One reason per row (empty string when valid)."""
    return invalid_rows(batch, min_time_us, max_time_us).per_row()


class _ValidateBatch(beam.DoFn):
    def __init__(self, record_type, min_time_us: int, max_time_us: int):
        self._record_type, self._min, self._max = record_type, min_time_us, max_time_us

    def process(self, batch: pa.Table):
        reasons = self._record_type.invalid_rows(batch, self._min, self._max)
        rejected = reasons.rejected()
        if rejected:
            for reason, n in Counter(reason for _, reason in rejected).items():
                count_dead_letter("cryptobeam", reason, n)
            letters = self._record_type.rejected_dead_letters(batch, rejected)
            yield from (beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter) for letter in letters)
        good = batch if not rejected else take_rows(batch, reasons.good())
        if good.num_rows:
            yield without_payload(good)


def rejected_trade_dead_letters(batch: pa.Table, rejected: list[tuple[int, str]]) -> list[dict]:
    rows, reasons = [i for i, _ in rejected], [reason for _, reason in rejected]
    picked = take_rows(batch.select(["price", "amount", "side"]), rows).to_pylist()
    # Times as integers: past the year 9999 no datetime holds them.
    times = batch.column("event_time").cast(pa.int64()).take(pa.array(rows, pa.int64())).to_pylist()
    messages = [
        f"{reason}: { ({**values, 'event_time_us': time}) }" for reason, values, time in zip(reasons, picked, times)
    ]
    return rows_dead_letters(batch, rows, reasons, messages, "validate", times)


class ValidateRecords(beam.PTransform):
    """Record batches -> valid batches (payload dropped) and dead letters, by the record type's rules
    (trades by default)."""

    def __init__(self, min_time_us: int | None = None, max_time_us: int | None = None, record_type=None, label=None):
        super().__init__(label)
        # Circular: the trade record type's rules are in this module
        from transforms.record_types import record_type as registered

        self._record_type = record_type or registered("trade")
        default_min, default_max = default_time_bounds()
        self._min = default_min if min_time_us is None else min_time_us
        self._max = default_max if max_time_us is None else max_time_us

    def expand(self, records):
        return records | beam.ParDo(_ValidateBatch(self._record_type, self._min, self._max)).with_output_types(
            ArrowTableCoder.value_type
        ).with_outputs(DEAD_LETTER_TAG, main="valid")


ValidateTrades = ValidateRecords
