"""The fold: ``evolve(state, event) -> state``, one small case per event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from msgspec.structs import replace

from natsflow.events.model import (
    INITIAL,
    AnyEvent,
    AttemptRecord,
    Deadline,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionState,
    ExecutionUnpaused,
    PendingSignal,
    SignalConsumed,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepDeadlineSet,
    StepFannedOut,
    StepProgressed,
    StepScheduled,
    StepSkipped,
    StepState,
    TimerFired,
    TimerStarted,
    WaitStarted,
)


def _with_step(state: ExecutionState, key: str, step: StepState) -> ExecutionState:
    return replace(state, steps={**state.steps, key: step})


def _step(state: ExecutionState, key: str) -> StepState:
    return state.steps.get(key) or StepState(status="waiting")


def _began(step: StepState, at: float) -> float:
    """When ``step`` first began: kept once set, else ``at`` (its first scheduling, timer
    or wait)."""
    return step.started_at if step.started_at is not None else at


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
            return _on_execution_cancelled(state, event)
        case ExecutionResumed():
            return _on_execution_resumed(state, event)
        case ExecutionPaused() | ExecutionUnpaused():
            return replace(state, paused=isinstance(event, ExecutionPaused))
        case StepDeadlineSet():
            return _on_step_deadline_set(state, event)
        case SignalReceived():
            return _on_signal_received(state, event)
        case WaitStarted():
            return _on_wait_started(state, event)
        case SignalConsumed():
            return _on_signal_consumed(state, event)
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
            deadlines=(),
            started_at=_began(step, event.at),
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
            started_at=_began(step, event.at),
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
    after = event.after or tuple(() for _ in event.keys)
    for key, item, needs, later in zip(event.keys, event.items, event.needs, after, strict=True):
        steps[key] = StepState(
            status="pending", parent=event.step, item=item, item_needs=needs, item_after=later
        )
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
            started_at=_began(step, event.at),
        ),
    )


def _on_timer_fired(state: ExecutionState, event: TimerFired) -> ExecutionState:
    step = _step(state, event.step)
    if step.timer_id != event.timer_id:
        return state
    return _with_step(state, event.step, replace(step, status="ready", timer_id=None))


def _on_execution_resumed(state: ExecutionState, event: ExecutionResumed) -> ExecutionState:
    steps = dict(state.steps)
    for key in event.rerun:
        step = steps.pop(key, None)
        if step is None:
            continue
        for child in step.children:  # a fan-out step run afresh fans out afresh
            steps.pop(child, None)
        if step.parent is not None and step.parent in steps:  # an item: pending again
            steps[key] = StepState(
                status="pending",
                parent=step.parent,
                item=step.item,
                item_needs=step.item_needs,
                item_after=step.item_after,
            )
    for key in event.retried:
        if key in steps:  # its attempts stay: the next one follows the last (``ready``)
            steps[key] = replace(
                steps[key], status="ready", error=None, kind=None, finished_at=None, due=None
            )
    for key in event.reopened:
        if key in steps:
            steps[key] = replace(
                steps[key],
                status="fanned_out",
                output=None,
                error=None,
                kind=None,
                finished_at=None,
            )
    return replace(
        state,
        status="running",
        steps=steps,
        error=None,
        failed_step=None,
        finished_at=None,
        attempts_before={**state.attempts_before, **event.attempts_before},
    )


def _on_signal_received(state: ExecutionState, event: SignalReceived) -> ExecutionState:
    if event.step is not None:  # a subject wait's message: its step completes next
        return _stop_waiting(state, event.step)
    kept = PendingSignal(signal_id=event.signal_id, data=event.data, at=event.at)
    queue = (*state.signals.get(event.name, ()), kept)
    return replace(state, signals={**state.signals, event.name: queue})


def _on_wait_started(state: ExecutionState, event: WaitStarted) -> ExecutionState:
    step = _step(state, event.step)
    return _with_step(
        state,
        event.step,
        replace(
            step,
            status="waiting",
            action="wait",
            input=event.input,
            timer_id=None,
            due=None,
            started_at=_began(step, event.at),
        ),
    )


def _stop_waiting(state: ExecutionState, key: str) -> ExecutionState:
    """The wait of ``key`` is answered: its timeout timer no longer applies (a late
    ``timer_fired`` for it then changes nothing)."""
    step = state.steps.get(key)
    if step is None or step.timer_id is None:
        return state
    return _with_step(state, key, replace(step, timer_id=None, due=None))


def _on_signal_consumed(state: ExecutionState, event: SignalConsumed) -> ExecutionState:
    state = _stop_waiting(state, event.step)
    queue = state.signals.get(event.name, ())
    if not queue:
        return state
    signals = dict(state.signals)
    if len(queue) == 1:
        del signals[event.name]  # no empty queues: the state stays as small as it was
    else:
        signals[event.name] = queue[1:]
    return replace(state, signals=signals)


def fold(events: Iterable[AnyEvent], state: ExecutionState = INITIAL) -> ExecutionState:
    """Fold events over a state (the initial one unless given: e.g. a snapshot's)."""
    for event in events:
        state = evolve(state, event)
    return state


# Steps still moving when an execution is cancelled: they end "cancelled" (a
# pending fan-out child never started, so it stays pending).
_IN_FLIGHT = frozenset({"scheduled", "waiting", "ready", "looping", "fanned_out"})


def _on_execution_cancelled(state: ExecutionState, event: ExecutionCancelled) -> ExecutionState:
    steps = dict(state.steps)
    for key, step in state.steps.items():
        if step.status in _IN_FLIGHT:
            attempts = _close_attempt(step, event.at, "execution cancelled", "cancelled")
            steps[key] = replace(step, status="cancelled", finished_at=event.at, attempts=attempts)
    return replace(
        state,
        status="cancelled",
        error=event.reason or None,
        finished_at=event.at,
        steps=steps,
    )


def _on_step_deadline_set(state: ExecutionState, event: StepDeadlineSet) -> ExecutionState:
    step = _step(state, event.step)
    if (step.status, step.attempt, step.iteration) != ("scheduled", event.attempt, event.iteration):
        return state  # that attempt is over: its deadline keeps nothing
    kept = tuple(d for d in step.deadlines if d.kind != event.kind)
    deadline = Deadline(timer_id=event.timer_id, due=event.due, kind=event.kind)
    return _with_step(state, event.step, replace(step, deadlines=(*kept, deadline)))
