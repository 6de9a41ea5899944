"""Deadlines the engine keeps (timeout, heartbeat) and what a cancel does to steps in flight."""

from __future__ import annotations

from natsflow.events.commands import (
    CancelTasks,
    DispatchTask,
    StartTimer,
    commands_for,
    pending_commands,
    resend_commands,
)
from natsflow.events.fold import fold
from natsflow.events.messages import Cancel, Progress, Result, TimerDue
from natsflow.events.model import StepAttemptFailed, StepDeadlineSet, StepScheduled, TimerStarted
from natsflow.manifests.deadlines import grace
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow
from tests.unit.strategies import START_AT, Run


def workflow(text: str) -> Workflow:
    return parse_manifest(text.encode(), "yaml", "<test>")


TIMED = workflow(
    "name: wf\nsteps:\n"
    "  a: {action: noop, timeout: 2s, retry: {attempts: 2, backoff: fixed, delay: 1s}}\n"
)


def test_a_timed_step_is_dispatched_with_its_deadline_timer_after_a_grace() -> None:
    run = Run(TIMED)
    events = run.start()
    scheduled, deadline = events[-2:]
    assert isinstance(scheduled, StepScheduled)
    assert isinstance(deadline, StepDeadlineSet)
    assert (deadline.kind, deadline.attempt) == ("timeout", 1)
    assert deadline.due == START_AT + 2 + grace(2) == START_AT + 3
    commands = commands_for(fold(events[:-2], run.state), run.state, events[-2:])
    assert [type(c) for c in commands] == [DispatchTask, StartTimer]
    # a redelivery resends both, the task and its deadline, and so does the fallback
    for again in (resend_commands(events, run.state), pending_commands(run.state)):
        timers = [c for c in again if isinstance(c, StartTimer)]
        assert [t.timer_id for t in timers] == [deadline.timer_id]
        assert [c.step for c in again if isinstance(c, DispatchTask)] == ["a"]


def test_a_missed_deadline_fails_the_attempt_as_timeout_and_the_retry_runs() -> None:
    run = Run(TIMED)
    deadline = run.start()[-1]
    assert isinstance(deadline, StepDeadlineSet)
    run.now = deadline.due
    events = run.apply(TimerDue(timer_id=deadline.timer_id, step="a"))
    failed = events[0]
    assert isinstance(failed, StepAttemptFailed)
    assert (failed.kind, failed.attempt, failed.retry_at) == ("timeout", 1, run.now + 1)
    assert "timeout of 2.0s" in failed.error
    assert isinstance(events[1], TimerStarted)
    # the deadline no longer pending, and the late result of attempt 1 is stale
    assert not [c for c in pending_commands(run.state) if isinstance(c, StartTimer)][1:]
    assert run.apply(Result(step="a", attempt=1, ok=True, output=1)) == ()
    run.now += 1
    retried = run.apply(TimerDue(timer_id=events[1].timer_id, step="a"))
    assert [type(e) for e in retried[1:]] == [StepScheduled, StepDeadlineSet]
    assert run.apply(TimerDue(timer_id=deadline.timer_id, step="a")) == ()  # once only
    done = run.apply(Result(step="a", attempt=2, ok=True, output=2))
    assert run.state.status == "completed", done


def test_a_heartbeat_moves_only_when_half_its_period_has_gone() -> None:
    run = Run(workflow("name: wf\nsteps:\n  a: {action: noop, heartbeat: 10s}\n"))
    first = run.start()[-1]
    assert isinstance(first, StepDeadlineSet)
    assert (first.kind, first.due) == ("heartbeat", START_AT + 10)
    report = Progress(step="a", attempt=1, message="alive")
    run.now = START_AT + 1
    assert [type(e).__name__ for e in run.apply(report)] == ["StepProgressed"]
    run.now = START_AT + 6
    moved = run.apply(report)  # the same text: no progress recorded, but the deadline moves
    assert len(moved) == 1
    assert isinstance(moved[0], StepDeadlineSet)
    assert moved[0].due == START_AT + 16
    assert moved[0].timer_id != first.timer_id
    assert run.apply(TimerDue(timer_id=first.timer_id, step="a")) == ()  # moved: fires into nothing
    run.now = START_AT + 16
    failed = run.apply(TimerDue(timer_id=moved[0].timer_id, step="a"))
    assert isinstance(failed[0], StepAttemptFailed)
    assert failed[0].kind == "heartbeat"
    assert run.state.status == "failed"


def test_cancel_ends_steps_in_flight_as_cancelled_and_tells_their_workers() -> None:
    wf = workflow(
        "name: wf\nsteps:\n"
        "  a: {action: noop, timeout: 30s}\n"
        "  b: {action: noop, retry: {attempts: 3}}\n"
        "  c: {action: noop, needs: [a]}\n"
    )
    run = Run(wf)
    run.start()
    run.apply(Result(step="b", attempt=1, ok=False))  # b waits for its retry
    before = run.state
    events = run.apply(Cancel(reason="operator"))
    steps = run.state.steps
    assert (steps["a"].status, steps["b"].status) == ("cancelled", "cancelled")
    assert "c" not in steps
    last = steps["a"].attempts[-1]
    assert (last.kind, last.finished_at) == ("cancelled", run.now)
    assert steps["b"].attempts[-1].kind != "cancelled"  # that attempt had ended already
    commands = commands_for(before, run.state, events)
    notices = [c for c in commands if isinstance(c, CancelTasks)]
    assert [(n.steps, n.reason) for n in notices] == [(("a",), "operator")]
    assert any(type(c).__name__ == "CancelTimers" for c in commands)
    # said again on a redelivery
    assert [c for c in pending_commands(run.state) if isinstance(c, CancelTasks)] == notices
