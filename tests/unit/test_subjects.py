"""Trigger subject patterns: which overlap (some subject matches both)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.manifests.subjects import overlaps


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("orders.*.created", "orders.>", True),
        ("orders.*.created", "orders.eu.created", True),
        ("orders.*.created", "orders.eu.deleted", False),
        ("orders.*.created", "orders.*", False),
        ("orders.>", "orders", False),
        ("a.*.c", "a.b.*", True),
        (">", "x.y.z", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


tokens = st.sampled_from(["a", "b", "*"])


@given(
    st.lists(tokens, min_size=1, max_size=4),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4),
)
def test_a_pattern_overlaps_exactly_the_subjects_it_matches(
    pattern: list[str], subject: list[str]
) -> None:
    expected = len(pattern) == len(subject) and all(
        p in ("*", s) for p, s in zip(pattern, subject, strict=True)
    )
    # a concrete subject (no wildcards) overlaps a pattern exactly when it matches it
    assert overlaps(".".join(pattern), ".".join(subject)) is expected
