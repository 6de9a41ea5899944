"""The pure parts of starting an execution: its id and its idempotency key."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.errors import InputError
from natsflow.events.ids import ENTROPY_BYTES, new_execution_id
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.starting import start_key

ID = re.compile(r"^hello-[0-9a-hjkmnp-tv-z]{18}$")
times = st.floats(min_value=0, max_value=2**34, allow_nan=False)
entropy = st.binary(min_size=ENTROPY_BYTES, max_size=ENTROPY_BYTES)


def test_an_id_is_the_workflow_then_time_and_randomness() -> None:
    assert new_execution_id("hello", 1_700_000_000.0, bytes(5)) == "hello-01hf7yat0000000000"
    assert new_execution_id("hello", 1_700_000_000.0, b"\xff" * 5) == "hello-01hf7yat00zzzzzzzz"


@given(times, times, entropy, entropy)
def test_ids_sort_by_start_time(t1: float, t2: float, e1: bytes, e2: bytes) -> None:
    a, b = new_execution_id("hello", t1, e1), new_execution_id("hello", t2, e2)
    assert ID.match(a)
    assert ID.match(b)
    if int(t1 * 1000) < int(t2 * 1000):
        assert a < b
    assert (a == b) == (int(t1 * 1000) == int(t2 * 1000) and e1 == e2)


TEMPLATED = parse_manifest(
    'name: once\nidempotency_key: "order-${{ input.order }}"\nsteps: {a: {action: noop}}', "yaml"
)
PLAIN = parse_manifest("name: plain\nsteps: {a: {action: noop}}", "yaml")


def test_the_callers_key_wins_over_the_template() -> None:
    assert start_key(TEMPLATED, {"order": 7}, "mine") == "mine"
    assert start_key(PLAIN, {"order": 7}, "mine") == "mine"


def test_the_template_renders_over_the_input() -> None:
    assert start_key(TEMPLATED, {"order": 7}, None) == "order-7"
    assert start_key(PLAIN, {"order": 7}, None) is None


def test_a_template_that_does_not_fit_the_input_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"idempotency_key of once: .*input has no key 'order'"):
        start_key(TEMPLATED, {}, None)
    whole = parse_manifest(
        'name: whole\nidempotency_key: "${{ input.order }}"\nsteps: {a: {action: noop}}', "yaml"
    )
    assert start_key(whole, {"order": 7}, None) == "7"
    with pytest.raises(InputError, match=r"idempotency_key of whole: .* is null for this input"):
        start_key(whole, {"order": None}, None)
