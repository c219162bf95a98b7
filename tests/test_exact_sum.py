"""Exact sums are correctly rounded and independent of order and grouping."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.exact_sum import ExactSum

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=400)
@given(st.lists(finite, max_size=60), st.lists(st.integers(0, 60), max_size=4))
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
