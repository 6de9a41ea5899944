"""The fold: ``evolve(state, event) -> state``, one small case per event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from msgspec.structs import replace

from natsflow.events.model import (
    INITIAL,
    AnyEvent,
    AttemptRecord,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionState,
    StepAttemptFailed,
    StepCompleted,
    StepFannedOut,
    StepProgressed,
    StepScheduled,
    StepSkipped,
    StepState,
    TimerFired,
    TimerStarted,
)


def _with_step(state: ExecutionState, key: str, step: StepState) -> ExecutionState:
    return replace(state, steps={**state.steps, key: step})


def _step(state: ExecutionState, key: str) -> StepState:
    return state.steps.get(key) or StepState(status="waiting")


def _close_attempt(
    step: StepState, at: float, error: str | None = None, kind: str | None = None
) -> tuple[AttemptRecord, ...]:
    if not step.attempts or step.attempts[-1].finished_at is not None:
        return step.attempts
    last = replace(step.attempts[-1], finished_at=at, error=error, kind=kind)
    return (*step.attempts[:-1], last)


def evolve(state: ExecutionState, event: AnyEvent) -> ExecutionState:
    """Apply one event. Pure: the same state and event always give the same result."""
    state = replace(state, events=state.events + 1, updated_at=event.at)
    match event:
        case ExecutionStarted():
            return _on_execution_started(state, event)
        case StepScheduled():
            return _on_step_scheduled(state, event)
        case StepProgressed():
            return _with_step(
                state, event.step, replace(_step(state, event.step), progress=event.message)
            )
        case StepCompleted():
            return _on_step_completed(state, event)
        case StepAttemptFailed():
            return _on_step_attempt_failed(state, event)
        case StepSkipped():
            return _on_step_skipped(state, event)
        case StepFannedOut():
            return _on_step_fanned_out(state, event)
        case TimerStarted():
            return _on_timer_started(state, event)
        case TimerFired():
            return _on_timer_fired(state, event)
        case ExecutionCompleted():
            return replace(state, status="completed", output=event.output, finished_at=event.at)
        case ExecutionFailed():
            return replace(
                state,
                status="failed",
                error=event.error,
                failed_step=event.step,
                finished_at=event.at,
            )
        case ExecutionCancelled():
            return replace(
                state, status="cancelled", error=event.reason or None, finished_at=event.at
            )
        case _:
            assert_never(event)


def _on_execution_started(state: ExecutionState, event: ExecutionStarted) -> ExecutionState:
    return replace(
        state,
        execution_id=event.execution_id,
        workflow=event.workflow,
        version=event.version,
        input=event.input,
        idempotency_key=event.idempotency_key,
        trigger=event.trigger,
        parent=event.parent,
        status="running",
        started_at=event.at,
    )


def _on_step_scheduled(state: ExecutionState, event: StepScheduled) -> ExecutionState:
    step = _step(state, event.step)
    # A new iteration starts a fresh attempt list: memory stays flat in long loops.
    history = step.attempts if event.iteration == step.iteration else ()
    return _with_step(
        state,
        event.step,
        replace(
            step,
            status="scheduled",
            action=event.action,
            attempt=event.attempt,
            iteration=event.iteration,
            input=event.input,
            timeout=event.timeout,
            child=event.child,
            progress=None,
            timer_id=None,
            due=None,
            started_at=step.started_at if step.started_at is not None else event.at,
            attempts=(*history, AttemptRecord(attempt=event.attempt, started_at=event.at)),
        ),
    )


def _on_step_completed(state: ExecutionState, event: StepCompleted) -> ExecutionState:
    step = _step(state, event.step)
    attempts = _close_attempt(step, event.at)
    if not event.final:
        return _with_step(
            state,
            event.step,
            replace(step, status="looping", output=event.output, attempts=attempts),
        )
    return _with_step(
        state,
        event.step,
        replace(
            step,
            status="completed",
            output=event.output,
            error=None,
            kind=None,
            finished_at=event.at,
            attempts=attempts,
            started_at=step.started_at if step.started_at is not None else event.at,
        ),
    )


def _on_step_attempt_failed(state: ExecutionState, event: StepAttemptFailed) -> ExecutionState:
    step = _step(state, event.step)
    attempts = _close_attempt(step, event.at, event.error, event.kind)
    step = replace(step, error=event.error, kind=event.kind, attempts=attempts)
    if event.retry_at is not None:
        return _with_step(state, event.step, replace(step, status="waiting", due=event.retry_at))
    return _with_step(state, event.step, replace(step, status="failed", finished_at=event.at))


def _on_step_skipped(state: ExecutionState, event: StepSkipped) -> ExecutionState:
    step = replace(
        _step(state, event.step), status="skipped", error=event.reason, finished_at=event.at
    )
    return _with_step(state, event.step, step)


def _on_step_fanned_out(state: ExecutionState, event: StepFannedOut) -> ExecutionState:
    parent = replace(
        _step(state, event.step),
        status="fanned_out" if event.keys else "completed",
        output=None if event.keys else [],
        children=event.keys,
        started_at=event.at,
        finished_at=None if event.keys else event.at,
    )
    steps = {**state.steps, event.step: parent}
    for key, item, needs in zip(event.keys, event.items, event.needs, strict=True):
        steps[key] = StepState(status="pending", parent=event.step, item=item, item_needs=needs)
    return replace(state, steps=steps)


def _on_timer_started(state: ExecutionState, event: TimerStarted) -> ExecutionState:
    step = _step(state, event.step)
    return _with_step(
        state,
        event.step,
        replace(
            step,
            status="waiting",
            timer_id=event.timer_id,
            due=event.due,
            started_at=step.started_at if step.started_at is not None else event.at,
        ),
    )


def _on_timer_fired(state: ExecutionState, event: TimerFired) -> ExecutionState:
    step = _step(state, event.step)
    if step.timer_id != event.timer_id:
        return state
    return _with_step(state, event.step, replace(step, status="ready", timer_id=None))


def fold(events: Iterable[AnyEvent], state: ExecutionState = INITIAL) -> ExecutionState:
    """Fold events over a state (the initial one unless given: e.g. a snapshot's)."""
    for event in events:
        state = evolve(state, event)
    return state
