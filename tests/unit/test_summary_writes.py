"""When an execution's ``ls`` row is written: status and pause always, progress at most
about once a second (``events.views.summary_changed``)."""

from __future__ import annotations

from msgspec.structs import replace

from natsflow.events.model import ExecutionState, StepState
from natsflow.events.views import summary_changed

RUNNING = ExecutionState(
    execution_id="e", workflow="w", version="v", status="running", updated_at=100.2
)
A_DONE = replace(RUNNING, steps={"a": StepState(status="completed")})


def test_a_status_or_pause_change_is_always_written() -> None:
    assert summary_changed(RUNNING, replace(RUNNING, status="completed"))
    assert summary_changed(RUNNING, replace(RUNNING, paused=True))


def test_progress_within_the_same_second_is_not_written() -> None:
    assert not summary_changed(RUNNING, replace(A_DONE, updated_at=100.9))


def test_progress_in_a_later_second_is_written() -> None:
    assert summary_changed(RUNNING, replace(A_DONE, updated_at=101.0))


def test_no_progress_is_not_written_even_a_second_later() -> None:
    assert not summary_changed(RUNNING, replace(RUNNING, updated_at=105.0))
