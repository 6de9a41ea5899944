"""``ls`` and ``stats`` filters in pure terms: time bounds and page cursors."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.listing import Cursor, decode_cursor, encode_cursor, parse_time


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("90s", 1000.0, 910.0),
        ("1.5h", 10_000.0, 10_000.0 - 5400),
        ("2d", 200_000.0, 200_000.0 - 172_800),
        ("1700000000", 0.0, 1_700_000_000.0),
        ("2024-05-01", 0.0, dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()),
        ("2024-05-01T10:00:00Z", 0.0, dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC).timestamp()),
        ("2024-05-01T12:00:00+02:00", 0.0, dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC).timestamp()),
    ],
)
def test_time_bounds_resolve(text: str, now: float, expected: float) -> None:
    assert parse_time("since", text).resolve(now) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-1h", "1y", "nan", "inf", "-inf", "1e999"])
def test_a_bad_time_bound_is_refused_naming_field_and_value(text: str) -> None:
    # nan and inf are floats to Python but no time: a bound of nan matched no row at all,
    # so `ls --since nan` answered an empty list instead of an error.
    with pytest.raises(ValueError, match=rf"^until: .*got {text!r}"):
        parse_time("until", text)


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9),
    st.text(min_size=1, max_size=80),
)
def test_a_cursor_comes_back_exactly(started_at: float, execution_id: str) -> None:
    cursor = Cursor(started_at, execution_id)
    assert decode_cursor(encode_cursor(cursor)) == cursor
