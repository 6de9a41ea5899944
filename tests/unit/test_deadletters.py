"""The pure side of dead letters: headers, views, what can be redriven, what is misdirected."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from natsflow.events.deadletters import (
    ERROR,
    ORIGINAL_SEQUENCE,
    ORIGINAL_STREAM,
    ORIGINAL_SUBJECT,
    PREVIEW_BYTES,
    StoredLetter,
    letter_headers,
    not_redrivable,
    original_headers,
    own_headers,
    preview,
    redrive_headers,
    row_of,
    view_of,
)
from natsflow.events.errors import InputError
from natsflow.events.messages import (
    Cancel,
    Progress,
    Result,
    Start,
    TimerDue,
    misdirected,
)
from natsflow.events.model import INITIAL, StepState, awaits_result
from natsflow.service.protocol import DlqRedriveRequest, decode_request

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def letter(headers: dict[str, str], data: bytes = b"{}", reason: str = "inbox") -> StoredLetter:
    return StoredLetter(seq=5, reason=reason, headers=headers, data=data, at=1.5)


@given(original=st.dictionaries(NAMES, VALUES, max_size=5), error=st.text(max_size=2000))
def test_the_original_headers_survive_beside_the_dead_letters_own(
    original: dict[str, str], error: str
) -> None:
    headers = letter_headers(error, "natsflow.in.e", original)
    assert original_headers(headers) == original
    own = own_headers(headers)
    assert set(own) == {ERROR, ORIGINAL_SUBJECT}
    assert own[ORIGINAL_SUBJECT] == "natsflow.in.e"
    assert not {"\n", "\r"} & set(own[ERROR])  # a line break would end the header
    assert len(own[ERROR]) <= 3 * 1000  # the first 1,000 characters, line breaks as " | "


def test_jetstream_never_acts_on_a_dead_letters_original_headers() -> None:
    headers = letter_headers("bad", "orders.new", {"Nats-Msg-Id": "m1", "Nats-TTL": "1s"})
    assert not [name for name in headers if name.lower().startswith("nats-")]


def test_a_redrive_sends_the_original_headers_but_jetstreams_with_an_id_of_its_own() -> None:
    original = {"Trace": "t", "Nats-Msg-Id": "m1", "Nats-Expected-Stream": "X", "nats-ttl": "1"}
    stored = letter(letter_headers("bad", "orders.new", original))
    assert redrive_headers(stored) == {"Trace": "t", "Nats-Msg-Id": "natsflow-redrive:5"}


def test_what_cannot_be_redriven_says_why() -> None:
    assert not_redrivable(letter(letter_headers("bad", "natsflow.task.noop"))) is None
    copy = {
        **letter_headers("undecodable", "natsflow.ev.e"),
        ORIGINAL_STREAM: "NATSFLOW_EVENTS",
        ORIGINAL_SEQUENCE: "9",
    }
    why = not_redrivable(letter(copy, reason="event"))
    assert why is not None
    assert "copy of the undecodable event stored at NATSFLOW_EVENTS sequence 9" in why
    assert "does not say" in (not_redrivable(letter({ERROR: "x"})) or "")
    looping = not_redrivable(letter(letter_headers("x", "natsflow.dlq.inbox")))
    assert "the dead letters themselves" in (looping or "")


def test_rows_and_views() -> None:
    stored = letter(letter_headers("bad\nworse", "natsflow.in.e", {"Trace": "t"}), b'{"a": 1}')
    row = row_of(stored)
    assert (row.id, row.reason, row.subject, row.at, row.size, row.redrivable) == (
        5,
        "inbox",
        "natsflow.in.e",
        1.5,
        8,
        True,
    )
    assert row.error == "bad | worse"
    view = view_of(stored)
    assert (view.payload_format, view.payload) == ("json", {"a": 1})
    assert view.original_headers == {"Trace": "t"}
    assert view.not_redrivable is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", ("empty", None, False)),
        (b"null", ("json", None, False)),
        (b"not json\n", ("text", "not json\n", False)),
        (b"\x00\x01\xff", ("binary", base64.b64encode(b"\x00\x01\xff").decode(), False)),
        (b"tab\tand \x07bell", ("binary", base64.b64encode(b"tab\tand \x07bell").decode(), False)),
    ],
)
def test_a_payload_preview(data: bytes, expected: tuple[str, object, bool]) -> None:
    assert preview(data) == expected


def test_a_long_payload_is_cut_even_inside_a_character() -> None:
    text = "é" * PREVIEW_BYTES  # two bytes each: the cut falls inside the preview's last one
    kind, value, truncated = preview(b"x" + text.encode())
    assert (kind, truncated) == ("text", True)
    assert value == "x" + "é" * (PREVIEW_BYTES // 2 - 1)
    kind, value, truncated = preview(b"\xff" * (PREVIEW_BYTES + 1))
    assert (kind, truncated, len(base64.b64decode(value))) == ("binary", True, PREVIEW_BYTES)


RUNNING = replace(
    INITIAL,
    execution_id="e",
    status="running",
    steps={
        "a": StepState(status="scheduled", action="noop", attempt=2, iteration=1),
        "nap": StepState(status="waiting", timer_id="t1"),
    },
)


def test_a_message_for_an_execution_that_never_started_is_misdirected() -> None:
    for message in (
        Result(step="a", attempt=1, ok=True),
        Progress(step="a", attempt=1, message="50%"),
        TimerDue(timer_id="t", step="a"),
        Cancel(reason="x"),
    ):
        assert "no such execution" in (misdirected(INITIAL, message) or "")
    assert misdirected(INITIAL, Start(workflow="w", version="v")) is None


@given(
    step=st.sampled_from(["a", "ghost"]),
    attempt=st.integers(1, 4),
    iteration=st.integers(0, 3),
    status=st.sampled_from(["running", "completed", "failed", "cancelled"]),
    progress=st.booleans(),
)
def test_a_result_is_misdirected_only_for_a_step_or_attempt_never_scheduled(
    step: str, attempt: int, iteration: int, status: str, progress: bool
) -> None:
    """A late copy (an older attempt, a finished execution) is ignored, not dead-lettered."""
    state = replace(RUNNING, status=status)
    message: Result | Progress = (
        Progress(step=step, attempt=attempt, iteration=iteration, message="m")
        if progress
        else Result(step=step, attempt=attempt, iteration=iteration, ok=True)
    )
    problem = misdirected(state, message)
    never = step == "ghost" or (iteration, attempt) > (1, 2)
    assert (problem is not None) is never, problem
    if awaits_result(state, step, attempt, iteration):
        assert problem is None


def test_a_timer_is_misdirected_only_for_a_step_the_execution_does_not_have() -> None:
    assert misdirected(RUNNING, TimerDue(timer_id="old", step="nap")) is None
    assert "step 'ghost'" in (misdirected(RUNNING, TimerDue(timer_id="t", step="ghost")) or "")
    assert misdirected(RUNNING, Cancel()) is None
    assert misdirected(RUNNING, Start(workflow="w", version="v")) is None


@pytest.mark.parametrize(
    ("verb", "body", "error"),
    [
        ("dlq.redrive", b"{}", "give either an id or all=true"),
        ("dlq.redrive", b'{"id": 1, "all": true}', "give either an id or all=true"),
        ("dlq.redrive", b'{"all": true, "input": 1}', "input replaces one dead letter's"),
        ("dlq.redrive", b'{"id": 1, "reason": "task"}', "reason selects among all"),
        ("dlq.purge", b"{}", "give one of an id, a reason or all=true"),
        ("dlq.purge", b'{"id": 2, "all": true}', "give one of an id, a reason or all=true"),
        ("dlq.purge", b'{"reason": "a.b"}', "reason: expected a dead-letter reason"),
        ("dlq.show", b'{"id": 0}', "id: Expected `int` >= 1"),
        ("dlq.ls", b'{"limit": 0}', "limit: Expected `int` >= 1"),
        ("dlq.ls", b'{"reson": "task"}', "reson: unknown field"),
    ],
)
def test_dead_letter_requests_refuse_what_does_not_fit(verb: str, body: bytes, error: str) -> None:
    with pytest.raises(InputError, match="^" + error.replace("(", r"\(")):
        decode_request(verb, body)


def test_a_redrive_input_may_be_null() -> None:
    """``--input null`` sends ``null``; no ``input`` at all sends the original payload."""
    given = decode_request("dlq.redrive", b'{"id": 3, "input": null}')
    left_out = decode_request("dlq.redrive", b'{"id": 3}')
    assert isinstance(given, DlqRedriveRequest)
    assert isinstance(left_out, DlqRedriveRequest)
    assert given.input is None
    assert left_out.input is msgspec.UNSET
