"""Dedupe classification: every copy is compared with the copy already kept."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from transforms.dedupe import classify

EMPTY = np.zeros(0, np.uint64)


def u(values):
    return np.array(values, dtype=np.uint64)


def test_repeats_compare_with_the_stored_copy():
    new, dup, conflict, seen_ids, seen_content = classify(u([7]), u([1]), EMPTY, EMPTY)
    assert new.tolist() == [True]
    new, dup, conflict, _, _ = classify(u([7, 7]), u([2, 1]), seen_ids, seen_content)
    assert (new.tolist(), dup.tolist(), conflict.tolist()) == ([False, False], [False, True], [True, False])


@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), max_size=12), max_size=5))
def test_matches_a_simple_dictionary_model(chunks):
    seen_ids, seen_content, model = EMPTY, EMPTY, {}
    for chunk in chunks:
        ids, content = u([i for i, _ in chunk]), u([c for _, c in chunk])
        new, dup, conflict, seen_ids, seen_content = classify(ids, content, seen_ids, seen_content)
        for k, (i, c) in enumerate(chunk):
            expected = "new" if i not in model else ("duplicate" if model[i] == c else "conflict")
            model.setdefault(i, c)
            got = "new" if new[k] else "duplicate" if dup[k] else "conflict"
            assert got == expected
        assert sorted(seen_ids.tolist()) == sorted(model)
