"""Dedupe classification: every copy is compared with the copy already kept."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from transforms.dedupe import _seen, _seen_bytes, classify

EMPTY = np.zeros(0, np.uint64)


def u(values):
    return np.array(values, dtype=np.uint64)


def test_repeats_compare_with_the_stored_copy():
    new, dup, conflict, seen_ids, seen_content = classify(u([7]), u([1]), EMPTY, EMPTY)
    assert new.tolist() == [True]
    assert (seen_ids.tolist(), seen_content.tolist()) == ([7], [1])
    new, dup, conflict, _, _ = classify(u([7, 7]), u([2, 1]), seen_ids, seen_content)
    assert (new.tolist(), dup.tolist(), conflict.tolist()) == ([False, False], [False, True], [True, False])


@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), max_size=12), max_size=5))
def test_matches_a_simple_dictionary_model(chunks):
    """The seen set is kept as the window's state keeps it: one entry appended per chunk."""
    entries, model = [], {}
    for chunk in chunks:
        ids, content = u([i for i, _ in chunk]), u([c for _, c in chunk])
        seen_ids, seen_content = _seen(entries)
        new, dup, conflict, added_ids, added_content = classify(ids, content, seen_ids, seen_content)
        if len(added_ids):
            entries.append(_seen_bytes(added_ids, added_content))
        for k, (i, c) in enumerate(chunk):
            expected = "new" if i not in model else ("duplicate" if model[i] == c else "conflict")
            model.setdefault(i, c)
            got = "new" if new[k] else "duplicate" if dup[k] else "conflict"
            assert got == expected
        seen_ids, seen_content = _seen(entries)
        assert sorted(zip(seen_ids.tolist(), seen_content.tolist())) == sorted(model.items())
