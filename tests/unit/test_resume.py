"""Resume, pause and unpause in the pure core: random DAG runs, resumed and paused at random.

Properties: a resume re-runs exactly the steps that did not complete (plus, with
``from_step``, that step and its dependants) and never a completed one; no
task's idempotency key (step, iteration, attempt) and no timer id is ever used
twice across resumes; while paused nothing new is dispatched and the execution
does not end; fold(snapshot) + tail == fold(all) throughout.
"""

from __future__ import annotations

from hypothesis import event as note_case
from hypothesis import given, settings
from hypothesis import strategies as st

from natsflow.events.codec import decode_snapshot, encode_snapshot
from natsflow.events.fold import fold
from natsflow.events.messages import Pause, Resume, Unpause
from natsflow.events.model import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionState,
    StepScheduled,
    TimerStarted,
)
from natsflow.manifests.resuming import dependants
from natsflow.manifests.schema import Workflow
from tests.unit.strategies import Run, dag_workflows, next_message

SETTINGS = settings(max_examples=120, deadline=None)


def drive(run: Run, data: st.DataObject, limit: int = 400) -> None:
    for _ in range(limit):
        message = data.draw(next_message(run))
        if message is None:
            return
        run.apply(message)


def check_snapshots(run: Run) -> None:
    history = run.history
    whole = fold(history)
    assert whole == run.state
    for k in range(0, len(history) + 1, max(1, len(history) // 8)):
        restored, covers = decode_snapshot(encode_snapshot(fold(history[:k]), k))
        assert fold(history[covers:], restored) == whole


def keys_used(events: list[AnyEvent]) -> list[tuple[str, int, int]]:
    return [(e.step, e.iteration, e.attempt) for e in events if isinstance(e, StepScheduled)]


def check_resume(
    workflow: Workflow,
    before: ExecutionState,
    events: tuple[AnyEvent, ...],
    from_step: str | None,
) -> None:
    assert events, "a failed execution always resumes"
    resumed = events[0]
    assert isinstance(resumed, ExecutionResumed)
    forced = set(dependants(workflow, from_step)) if from_step else set()
    reset = {*resumed.retried, *resumed.rerun, *resumed.reopened}
    for key, step in before.steps.items():
        top = step.parent if step.parent is not None else key
        if step.status == "completed" and top not in forced:
            # invariant 1: a completed step keeps its output and is never scheduled again
            assert key not in reset
            assert not any(getattr(e, "step", None) == key for e in events[1:])
        elif step.status != "completed" and step.parent not in forced:
            assert key in reset, f"{key} ({step.status}) is not re-run"
    for key in reset:
        assert key in before.steps


@SETTINGS
@given(dag_workflows(max_steps=6), st.data())
def test_resume_reruns_exactly_what_did_not_complete(
    workflow: Workflow, data: st.DataObject
) -> None:
    run = Run(workflow)
    run.start()
    drive(run, data)
    for _ in range(3):
        if run.state.status != "failed":
            break
        from_step = data.draw(st.none() | st.sampled_from(sorted(workflow.steps)))
        before = run.state
        note_case("resumed" if from_step is None else "resumed from a step")
        events = run.apply(Resume(from_step=from_step))
        check_resume(workflow, before, events, from_step)
        assert run.state.status in ("running", "failed", "completed")
        drive(run, data)
    history = run.history
    keys = keys_used(history)
    assert len(keys) == len(set(keys)), "an idempotency key was used twice"
    timers = [e.timer_id for e in history if isinstance(e, TimerStarted)]
    assert len(timers) == len(set(timers)), "a timer id was used twice"
    check_snapshots(run)


@SETTINGS
@given(dag_workflows(max_steps=6), st.data(), st.integers(min_value=0, max_value=10))
def test_paused_dispatches_nothing_new(
    workflow: Workflow, data: st.DataObject, pause_after: int
) -> None:
    run = Run(workflow)
    run.start()
    for _ in range(pause_after):
        message = data.draw(next_message(run))
        if message is None:
            break
        run.apply(message)
    if run.state.status != "running":
        return
    note_case("paused")
    assert run.apply(Pause(reason="test")) == (ExecutionPaused(at=run.now, reason="test"),)
    assert run.apply(Pause()) == ()  # paused already
    paused_at = len(run.history)
    drive(run, data)  # workers answer, timers fire: recorded, nothing decided
    while_paused = run.history[paused_at:]
    assert run.state.status == "running"
    assert run.state.paused
    for event in while_paused:
        assert not isinstance(event, StepScheduled | ExecutionCompleted | ExecutionFailed)
        assert not isinstance(event, TimerStarted) or event.purpose == "retry"
    unpaused = run.apply(Unpause())
    assert run.apply(Unpause()) == ()
    assert not run.state.paused
    assert unpaused
    drive(run, data)
    assert run.state.status in ("completed", "failed")
    check_snapshots(run)
