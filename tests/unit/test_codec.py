"""The stored formats: event batches and snapshots survive a round trip; old snapshots upcast."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsflow.events.codec import (
    STATE_SCHEMA_VERSION,
    UPCASTERS,
    Snapshot,
    decode_batch,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
)
from natsflow.events.errors import SnapshotSchemaError
from natsflow.events.fold import fold
from natsflow.events.messages import (
    AnyInbox,
    Cancel,
    ErrorInfo,
    Progress,
    Result,
    Start,
    Task,
    TimerDue,
    inbox_decoder,
    json_encoder,
    task_decoder,
)
from natsflow.events.model import AnyEvent, AttemptRecord, ExecutionState, StepSkipped, StepState
from tests.unit.strategies import (
    EVENT_STRATEGIES,
    Run,
    any_event,
    event_batches,
    json_values,
    simulated_runs,
)

SETTINGS = settings(max_examples=100, deadline=None)
_msgpack = msgspec.msgpack.Encoder()


def snapshot_bytes(schema: int, covers: int, state: dict[str, Any]) -> bytes:
    """A snapshot as an older (or newer) writer would have stored it."""
    raw = msgspec.Raw(_msgpack.encode(state))
    return _msgpack.encode(Snapshot(schema=schema, covers=covers, state=raw))


def v1_layout(state: ExecutionState) -> dict[str, Any]:
    """The v1 state layout: the resume point was named ``event_count``."""
    plain: dict[str, Any] = msgspec.to_builtins(state)
    plain["event_count"] = plain.pop("events")
    return plain


# --- event batches -----------------------------------------------------------


@SETTINGS
@given(event_batches(max_size=12))
def test_batch_round_trip(events: tuple[AnyEvent, ...]) -> None:
    assert decode_batch(encode_batch(events)) == events


@pytest.mark.parametrize("cls", list(EVENT_STRATEGIES), ids=lambda cls: cls.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_event_round_trips(cls: type[AnyEvent], data: st.DataObject) -> None:
    """Every event type, drawn through its registered strategy (``from_type``)."""
    event = data.draw(st.from_type(cls))
    assert type(event) is cls
    (decoded,) = decode_batch(encode_batch((event,)))
    assert type(decoded) is cls
    assert decoded == event


def test_batch_with_unknown_field_decodes() -> None:
    """A newer writer's extra field never breaks an older reader."""
    event = {"type": "step_skipped", "at": 1.0, "step": "a", "reason": "r", "added_later": [1]}
    data = _msgpack.encode({"events": [event], "also_new": True})
    assert decode_batch(data) == (StepSkipped(at=1.0, step="a", reason="r"),)


# --- snapshots ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(simulated_runs())
def test_snapshot_round_trip_of_simulated_histories(run: Run) -> None:
    history = run.history
    assert fold(history) == run.state
    for k in range(len(history) + 1):
        state = fold(history[:k])
        assert decode_snapshot(encode_snapshot(state, k)) == (state, k)
    v1 = snapshot_bytes(1, len(history), v1_layout(run.state))
    assert decode_snapshot(v1, run.execution_id) == (run.state, len(history))


@SETTINGS
@given(st.lists(any_event(), max_size=15), st.integers(min_value=0, max_value=2**40))
def test_snapshot_round_trip_of_arbitrary_folds(events: list[AnyEvent], covers: int) -> None:
    state = fold(events)
    assert decode_snapshot(encode_snapshot(state, covers)) == (state, covers)


@SETTINGS
@given(st.lists(any_event(), max_size=15), st.integers(min_value=0, max_value=2**40))
def test_v1_snapshot_is_upcast(events: list[AnyEvent], covers: int) -> None:
    state = fold(events)
    data = snapshot_bytes(1, covers, v1_layout(state))
    assert decode_snapshot(data) == (state, covers)


def test_hand_written_v1_snapshot() -> None:
    """A v1 snapshot written out by hand, not derived from today's state layout."""
    v1 = {
        "execution_id": "ex-1",
        "workflow": "wf",
        "version": "abc",
        "status": "running",
        "steps": {
            "a": {
                "status": "completed",
                "action": "noop",
                "attempt": 2,
                "output": {"x": [1, 2]},
                "attempts": [
                    {"attempt": 1, "started_at": 1.0, "finished_at": 2.0, "error": "boom"},
                    {"attempt": 2, "started_at": 3.0, "finished_at": 4.0},
                ],
            },
            "b": {"status": "waiting", "timer_id": "b/retry/0/1", "due": 9.5},
        },
        "started_at": 1.0,
        "event_count": 7,
    }
    state, covers = decode_snapshot(snapshot_bytes(1, 12, v1), "ex-1")
    assert covers == 12
    assert state == ExecutionState(
        execution_id="ex-1",
        workflow="wf",
        version="abc",
        status="running",
        steps={
            "a": StepState(
                status="completed",
                action="noop",
                attempt=2,
                output={"x": [1, 2]},
                attempts=(
                    AttemptRecord(attempt=1, started_at=1.0, finished_at=2.0, error="boom"),
                    AttemptRecord(attempt=2, started_at=3.0, finished_at=4.0),
                ),
            ),
            "b": StepState(status="waiting", timer_id="b/retry/0/1", due=9.5),
        },
        started_at=1.0,
        events=7,
    )


def test_v1_snapshot_without_event_count_starts_at_zero() -> None:
    plain = v1_layout(ExecutionState(execution_id="e", status="running"))
    del plain["event_count"]
    state, covers = decode_snapshot(snapshot_bytes(1, 0, plain))
    assert (state.events, state.status, covers) == (0, "running", 0)


def test_upcasters_chain_to_the_current_schema() -> None:
    assert sorted(UPCASTERS) == list(range(1, STATE_SCHEMA_VERSION))


@pytest.mark.parametrize("ahead", [1, 7])
def test_newer_snapshot_schema_is_refused(ahead: int) -> None:
    version = STATE_SCHEMA_VERSION + ahead
    data = snapshot_bytes(version, 3, msgspec.to_builtins(ExecutionState()))
    with pytest.raises(SnapshotSchemaError) as info:
        decode_snapshot(data, "ex-9")
    assert info.value.version == version
    assert info.value.execution == "ex-9"
    assert f"v{version}" in str(info.value)
    assert "ex-9" in str(info.value)


def test_snapshot_schema_without_upcaster_is_refused() -> None:
    data = snapshot_bytes(0, 3, msgspec.to_builtins(ExecutionState()))
    with pytest.raises(SnapshotSchemaError, match="no upcaster from v0"):
        decode_snapshot(data, "ex-0")


# --- wire messages (JSON, spoken by workers in any language) --------------------

_attempts = st.integers(min_value=1, max_value=1000)
_iterations = st.integers(min_value=0, max_value=1000)
_errors = st.builds(
    ErrorInfo,
    message=st.text(max_size=12),
    kind=st.text(max_size=8),
    retryable=st.booleans(),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e6),
)
inbox_messages: st.SearchStrategy[AnyInbox] = st.one_of(
    st.builds(
        Start,
        workflow=st.text(max_size=8),
        version=st.text(max_size=8),
        input=json_values,
        idempotency_key=st.none() | st.text(max_size=8),
    ),
    st.builds(
        Result,
        step=st.text(max_size=8),
        attempt=_attempts,
        ok=st.booleans(),
        output=json_values,
        error=st.none() | _errors,
        iteration=_iterations,
    ),
    st.builds(
        Progress,
        step=st.text(max_size=8),
        attempt=_attempts,
        message=st.text(max_size=12),
        iteration=_iterations,
    ),
    st.builds(TimerDue, timer_id=st.text(max_size=12), step=st.text(max_size=8)),
    st.builds(Cancel, reason=st.text(max_size=12)),
)


@SETTINGS
@given(inbox_messages)
def test_inbox_message_round_trip(message: AnyInbox) -> None:
    assert inbox_decoder.decode(json_encoder.encode(message)) == message


@SETTINGS
@given(
    st.builds(
        Task,
        execution_id=st.text(max_size=8),
        step=st.text(max_size=8),
        attempt=_attempts,
        action=st.text(max_size=8),
        input=json_values,
        timeout=st.none() | st.floats(min_value=0.001, max_value=1e4),
        iteration=_iterations,
        idempotency_key=st.text(max_size=16),
        reply_to=st.text(max_size=16),
    )
)
def test_task_round_trip(task: Task) -> None:
    assert task_decoder.decode(json_encoder.encode(task)) == task
