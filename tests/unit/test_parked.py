"""The pure parts of parking an execution whose history cannot be decoded."""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from natsflow.events.errors import Undecodable
from natsflow.events.fold import fold
from natsflow.events.model import INITIAL, ExecutionStarted, StepScheduled
from natsflow.events.views import (
    ExecutionSummary,
    execution_view,
    parked_at,
    parked_state,
    parked_summary,
    unreadable_summary,
)
from natsflow.service.operations import history_entry
from natsflow.service.outcomes import error_of, outcome

PROBLEM = Undecodable(
    "ex-1", "event", "NATSFLOW_EVENTS", "natsflow.ev.ex-1", 42, "malformed", b"\xc1"
)
RUNNING = ExecutionSummary(
    execution_id="ex-1", workflow="w", version="v1", status="running", started_at=10.0
)


def test_the_error_names_the_execution_subject_sequence_and_reason() -> None:
    assert str(PROBLEM) == (
        "execution ex-1: undecodable event on natsflow.ev.ex-1 at sequence 42"
        " of NATSFLOW_EVENTS: malformed"
    )
    assert PROBLEM.data == b"\xc1"


def test_a_parked_summary_keeps_the_workflow_and_start() -> None:
    summary = parked_summary("ex-1", str(PROBLEM), RUNNING, now=20.0)
    assert summary == replace(RUNNING, status="failed", finished_at=20.0, error=str(PROBLEM))


def test_parking_again_changes_nothing() -> None:
    first = parked_summary("ex-1", str(PROBLEM), RUNNING, now=20.0)
    assert parked_summary("ex-1", str(PROBLEM), first, now=30.0) is first
    other = parked_summary("ex-1", "another reason", first, now=30.0)
    assert (other.error, other.finished_at) == ("another reason", 30.0)


def test_a_parked_summary_without_a_previous_row() -> None:
    summary = parked_summary("ex-1", "why", None, now=5.0)
    assert (summary.workflow, summary.status, summary.finished_at) == ("", "failed", 5.0)


def test_the_parked_view_shows_what_could_be_read() -> None:
    events = (
        ExecutionStarted(at=10.0, execution_id="ex-1", workflow="w", version="v1"),
        StepScheduled(at=10.0, step="a", attempt=1, action="noop"),
    )
    state = fold(events, replace(INITIAL, execution_id="ex-1"))
    parked_row = parked_summary("ex-1", str(PROBLEM), RUNNING, now=20.0)
    view = execution_view(parked_state(state, str(PROBLEM), parked_row), 3, 1, parked_at(PROBLEM))
    assert (view.status, view.error, view.finished_at) == ("failed", str(PROBLEM), 20.0)
    assert view.steps["a"].status == "scheduled"
    assert view.parked is not None
    assert (view.parked.subject, view.parked.seq) == ("natsflow.ev.ex-1", 42)


def test_the_parked_view_of_an_unreadable_snapshot_comes_from_the_summary() -> None:
    state = parked_state(replace(INITIAL, execution_id="ex-1"), "why", RUNNING)
    assert (state.workflow, state.version, state.started_at) == ("w", "v1", 10.0)
    assert (state.status, state.finished_at) == ("failed", None)  # not parked in ls yet


def test_an_unreadable_summary_is_listed_as_unknown() -> None:
    row = unreadable_summary("ex-1", "why")
    assert (row.execution_id, row.status, row.error) == ("ex-1", "unknown", "why")


def test_history_marks_the_undecodable_message() -> None:
    assert history_entry(42, PROBLEM) == {
        "seq": 42,
        "type": "undecodable",
        "at": None,
        "what": "event",
        "stream": "NATSFLOW_EVENTS",
        "subject": "natsflow.ev.ex-1",
        "reason": "malformed",
    }
    started = ExecutionStarted(at=1.0, execution_id="ex-1", workflow="w", version="v")
    assert history_entry(1, started) == {"seq": 1, **msgspec.to_builtins(started)}


def test_an_undecodable_answer_is_a_500_naming_the_message() -> None:
    answer = outcome(PROBLEM)
    assert (answer.status, answer.message) == (500, str(PROBLEM))
    assert str(error_of(answer.status, answer.message)) == str(PROBLEM)
