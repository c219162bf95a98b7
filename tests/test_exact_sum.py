"""Exact sums are correctly rounded and independent of order and grouping."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transforms.exact_sum import ExactSum

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=400)
@given(st.lists(finite, max_size=60), st.lists(st.integers(0, 60), max_size=4))
@example([1.5, 1.5, -3.0], [])  # every piece cancels: no group keeps a nonzero sum
def test_exact_and_grouping_independent(values, cuts):
    exact = float(sum((Fraction(v) for v in values), Fraction(0)))
    assert float(ExactSum.of(np.array(values))) == exact == math.fsum(values)
    bounds = sorted({min(c, len(values)) for c in cuts})
    parts = np.split(np.array(values, dtype=float), bounds)
    total = ExactSum()
    for part in reversed(parts):
        total = total + ExactSum.of(part)
    assert float(total) == exact


@given(st.lists(st.lists(finite, max_size=20), min_size=1, max_size=4))
def test_of_many_equals_of_each(arrays):
    many = ExactSum.of_many([np.array(a, dtype=float) for a in arrays])
    assert [float(s) for s in many] == [math.fsum(a) for a in arrays]


def exact_value(total: ExactSum) -> Fraction:
    return Fraction(total.numerator) * Fraction(2) ** total.exponent


@given(st.lists(finite, max_size=30), st.lists(finite, max_size=30))
def test_difference_is_exact(a, b):
    difference = ExactSum.of(np.array(a, dtype=float)) - ExactSum.of(np.array(b, dtype=float))
    assert exact_value(difference) == sum(map(Fraction, a), Fraction(0)) - sum(map(Fraction, b), Fraction(0))


def test_widest_values_at_the_most_values_per_pass_stay_exact():
    """The pieces' float64 accumulators are exact only up to a bound: fill a pass to the limit
    with values whose aligned mantissas are the widest possible (53 bits shifted by 7)."""
    from transforms import exact_sum

    widest = np.nextafter(256.0, 0.0)  # exponent 7 above 1.0's bucket base, every mantissa bit set
    values = np.full(exact_sum._MAX_VALUES_PER_PASS + 3, widest)
    values[0] = 1.0  # fixes the bucket base, so the others are shifted by 7
    total = ExactSum.of_groups(values, np.zeros(len(values), dtype=np.int64), 1)[0]
    assert exact_value(total) == 1 + (len(values) - 1) * Fraction(widest)


def test_many_groups_over_a_wide_exponent_range_sum_exactly():
    """One tiny amount among ordinary ones spans dozens of exponent buckets; with many groups the
    sums are kept per bucket in use only, and every group's total stays exact."""
    rng = np.random.default_rng(7)
    n_groups = 2_000
    groups = np.repeat(np.arange(n_groups), 3)
    values = np.column_stack(
        (rng.uniform(0.001, 5.0, n_groups), np.full(n_groups, 1e-150), -rng.uniform(0.001, 5.0, n_groups))
    ).ravel()
    sums = ExactSum.of_groups(values, groups, n_groups)
    for g in (0, 1, 777, n_groups - 1):
        assert exact_value(sums[g]) == sum(map(Fraction, values[3 * g : 3 * g + 3].tolist()), Fraction(0))
