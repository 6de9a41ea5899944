"""Effects as data: what a decision needs done outside, derived by pure code.

The actor carries commands out with one ``match`` (``natsflow.actors.effects``),
so a command nobody carries out is a type error. They come from three places:

- ``commands_for(before, after, events)``: a fresh decision's effects;
- ``resend_commands(events, state)``: what one earlier decision's commands still
  mean for the state now, carried out again when the message that caused it
  comes back (its ack was lost) or when they failed to go out;
- ``pending_commands(state)``: everything a decided state may still need, the
  fallback when that decision is no longer at hand (compacted into a snapshot).

Tasks and timers carry a ``Nats-Msg-Id`` and a cancelled timer stays cancelled,
so sending one twice stores it once while the server remembers the id; a summary
is a KV put of the state it was derived from (the last put wins).

Subjects are not known here (they belong to the JetStream adapter): commands
name the execution, step and timer, and the actor turns them into messages.
"""

from __future__ import annotations

from typing import Any, assert_never

import msgspec

from natsflow.events.model import (
    INITIAL,
    TERMINAL_EXECUTION,
    AnyEvent,
    Attempt,
    Count,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionState,
    ExecutionUnpaused,
    ParentLink,
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
from natsflow.events.views import ExecutionSummary, summary_changed, summary_of


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="command"):
    """Base of every command; all name the execution they act for."""

    execution_id: str


class DispatchTask(Command, frozen=True, tag="dispatch_task"):
    """Send one attempt of a step to the workers of ``action``."""

    step: str
    attempt: Attempt
    action: str
    iteration: Count = 0
    input: Any = None
    timeout: float | None = None


class StartTimer(Command, frozen=True, tag="start_timer"):
    """Schedule a durable wake-up (a message schedule) into the execution's inbox."""

    timer_id: str
    step: str
    due: float


class CancelTimers(Command, frozen=True, tag="cancel_timers"):
    """Drop every wake-up still scheduled for the execution: it ended, nobody waits."""


class WriteSummary(Command, frozen=True, tag="write_summary"):
    """Store the execution's ``ls`` row."""

    summary: ExecutionSummary


class CancelTasks(Command, frozen=True, tag="cancel_tasks"):
    """Tell the workers running ``steps`` of the cancelled execution to stop them
    (a cancel notice; see ``natsflow.events.messages.CancelNotice``).

    A ``workflow`` step's child is cancelled by ``CancelChild`` instead (``_family``).
    """

    steps: tuple[str, ...]
    reason: str = ""


class ListenFor(Command, frozen=True, tag="listen_for"):
    """Record that ``step`` waits for a message on ``subject`` (the waits actor hears it)."""

    step: str
    subject: str


class StopListening(Command, frozen=True, tag="stop_listening"):
    """The subject waits of these steps ended (answered, timed out, execution over)."""

    steps: tuple[str, ...]


class StartChild(Command, frozen=True, tag="start_child"):
    """Start the child execution ``child`` of ``workflow`` for a ``workflow`` step.

    Its id is fixed by the parent and the step (``natsflow.events.ids``), so carrying
    this out again starts nothing new; a child that could not start, or that ended
    already, is reported to the parent's inbox as ``child_ended``.
    """

    step: str
    attempt: Attempt
    child: str
    workflow: str
    input: Any = None
    iteration: Count = 0


class CancelChild(Command, frozen=True, tag="cancel_child"):
    """Cancel a child execution still running when its parent ended."""

    child: str
    reason: str
    workflow: str | None = None  # the child's workflow: a code app's child is routed to it


class NotifyParent(Command, frozen=True, tag="notify_parent"):
    """Tell a child's parent how it ended (``child_ended`` to the parent's inbox)."""

    parent: ParentLink
    status: str
    output: Any = None
    error: str | None = None
    # the child's events when it ended: each ending is its own report (a resumed child
    # ends again, and its parent, resumed too, waits for that report)
    events: Count = 0


AnyCommand = (
    DispatchTask
    | StartTimer
    | CancelTimers
    | WriteSummary
    | CancelTasks
    | ListenFor
    | StopListening
    | StartChild
    | CancelChild
    | NotifyParent
)


# Events with nothing to do outside beyond the summary (the match's pass cases below).
_OUTSIDE_NOTHING: frozenset[type] = frozenset(
    {StepCompleted, StepAttemptFailed, StepProgressed, StepSkipped, TimerFired}
)


def commands_for(
    before: ExecutionState, after: ExecutionState, events: tuple[AnyEvent, ...]
) -> tuple[AnyCommand, ...]:
    """The effects of appending ``events``, which took ``before`` to ``after``."""
    out: list[AnyCommand] = []
    execution = after.execution_id
    for event in events:
        if type(event) in _OUTSIDE_NOTHING:
            continue  # the commonest events (a result's): one set look-up, not the match
        match event:
            case StepScheduled() | TimerStarted():
                # The state after the batch still waits for it: the command follows from that.
                command = _outstanding(execution, event.step, after.steps[event.step])
                assert command is not None  # it was scheduled or set by this very batch
                out.append(command)
            case ExecutionCompleted() | ExecutionFailed() | ExecutionCancelled():
                out.extend(_cancel_timers(after))
                out.extend(_cancel_tasks(after))
                out.extend(_family(before, after))
            case StepDeadlineSet():
                out.extend(_deadline_timer(execution, after, event))
            case (
                ExecutionStarted()
                | StepProgressed()
                | StepCompleted()
                | StepAttemptFailed()
                | StepSkipped()
                | StepFannedOut()
                | TimerFired()
                | SignalReceived()
                | WaitStarted()
                | SignalConsumed()
            ):
                pass  # facts and outcomes: nothing to do outside beyond the summary below
            case ExecutionResumed() | ExecutionPaused() | ExecutionUnpaused():
                pass  # the summary below; a resume's tasks follow from its StepScheduled
            case _:
                assert_never(event)
    out.extend(_listen_changes(before, after))
    if summary_changed(before, after):
        out.append(WriteSummary(execution_id=execution, summary=summary_of(after)))
    return tuple(out)


def pending_commands(state: ExecutionState) -> tuple[AnyCommand, ...]:
    """Everything ``state`` may still need done outside: tasks out, timers set, its summary."""
    out: list[AnyCommand] = []
    if state.status == "running":
        for key, step in state.steps.items():
            command = _outstanding(state.execution_id, key, step)
            if command is not None:
                out.append(command)
            out.extend(_deadline_timers(state.execution_id, key, step))
        out.extend(_listen_changes(INITIAL, state))
    return (*out, *_closing(state))


def resend_commands(events: tuple[AnyEvent, ...], state: ExecutionState) -> tuple[AnyCommand, ...]:
    """What a decision's commands still mean now: to carry out again when the message
    that caused it comes back (its ack was lost, perhaps before its commands went out).

    Only that decision's own tasks and timers, and only those the state still waits
    for: a task whose step has completed since is never sent again.
    """
    out: list[AnyCommand] = []
    if state.status == "running":
        out.extend(_waits_resent(events, state))
        for event in events:
            if isinstance(event, StepDeadlineSet):
                out.extend(_deadline_timer(state.execution_id, state, event))
                continue
            if not isinstance(event, StepScheduled | TimerStarted):
                continue
            step = state.steps.get(event.step)
            if step is not None and _still_waits_for(step, event):
                command = _outstanding(state.execution_id, event.step, step)
                if command is not None:
                    out.append(command)
    return (*out, *_closing(state))


def _still_waits_for(step: StepState, event: StepScheduled | TimerStarted) -> bool:
    """Whether ``step`` is still at the attempt or timer ``event`` started."""
    if isinstance(event, StepScheduled):
        return step.status == "scheduled" and (step.attempt, step.iteration) == (
            event.attempt,
            event.iteration,
        )
    return step.status == "waiting" and step.timer_id == event.timer_id


def _outstanding(execution: str, key: str, step: StepState) -> AnyCommand | None:
    """The task out or the timer set that ``step`` waits for now, if any."""
    if step.status == "scheduled" and step.child is not None:
        return _start_child(execution, key, step)
    if step.status == "scheduled":
        return DispatchTask(
            execution_id=execution,
            step=key,
            attempt=step.attempt,
            iteration=step.iteration,
            action=step.action,
            input=step.input,
            timeout=step.timeout,
        )
    if step.status == "waiting" and step.timer_id and step.due is not None:
        return StartTimer(execution_id=execution, timer_id=step.timer_id, step=key, due=step.due)
    return None


def _closing(state: ExecutionState) -> list[AnyCommand]:
    """What any decided state needs, fresh or resent: its timers dropped once it has
    ended, and its summary."""
    out = _cancel_timers(state) if state.status in TERMINAL_EXECUTION else []
    out.extend(_cancel_tasks(state))
    out.extend(_stop_listening(state) if state.status in TERMINAL_EXECUTION else [])
    out.extend(_family(state, state) if state.status in TERMINAL_EXECUTION else [])
    if state.status != "pending":
        out.append(WriteSummary(execution_id=state.execution_id, summary=summary_of(state)))
    return out


def _cancel_timers(state: ExecutionState) -> list[AnyCommand]:
    """One command for all the timers an ended execution still has (none: nothing)."""
    waiting = any(_has_timers(step) for step in state.steps.values())
    return [CancelTimers(execution_id=state.execution_id)] if waiting else []


def _deadline_timers(execution: str, key: str, step: StepState) -> list[AnyCommand]:
    """The timers of the deadlines the engine keeps for ``step``'s attempt in flight."""
    if step.status != "scheduled":
        return []
    return [
        StartTimer(execution_id=execution, timer_id=d.timer_id, step=key, due=d.due)
        for d in step.deadlines
    ]


def _deadline_timer(
    execution: str, state: ExecutionState, event: StepDeadlineSet
) -> list[AnyCommand]:
    """The timer of ``event``'s deadline, if the state still keeps it (the attempt is
    in flight and the deadline was not moved since)."""
    step = state.steps.get(event.step)
    if step is None or step.status != "scheduled" or state.status != "running":
        return []
    return [
        StartTimer(execution_id=execution, timer_id=d.timer_id, step=event.step, due=d.due)
        for d in step.deadlines
        if d.timer_id == event.timer_id
    ]


def _cancel_tasks(state: ExecutionState) -> list[AnyCommand]:
    """A cancel notice for the steps whose attempt was in a worker's hands when the
    execution was cancelled (the fold closed that attempt with kind "cancelled")."""
    if state.status != "cancelled":
        return []
    steps = tuple(
        key
        for key, step in state.steps.items()
        if step.status == "cancelled" and step.attempts and step.attempts[-1].kind == "cancelled"
    )
    if not steps:
        return []
    return [CancelTasks(execution_id=state.execution_id, steps=steps, reason=state.error or "")]


def _has_timers(step: StepState) -> bool:
    """Whether ``step`` may still have a timer scheduled: one it waits for (or waited
    for when the execution was cancelled), or a deadline the engine kept for it."""
    return (step.status in ("waiting", "cancelled") and bool(step.timer_id)) or bool(step.deadlines)


# --- subject waits -------------------------------------------------------------


def _listening(state: ExecutionState) -> dict[str, str]:
    """Step -> subject of the subject waits ``state`` has open (none once it has ended)."""
    if state.status != "running":
        return {}
    return {
        key: step.wait_subject
        for key, step in state.steps.items()
        # the status first: a plain compare, where wait_subject reads the step's input
        if step.status == "waiting" and step.wait_subject is not None
    }


def _listen_changes(
    before: ExecutionState, after: ExecutionState
) -> list[ListenFor | StopListening]:
    """A ``ListenFor`` per subject wait open in ``after`` and not in ``before``, and one
    ``StopListening`` for those open in ``before`` and not in ``after``."""
    was, now = _listening(before), _listening(after)
    out: list[ListenFor | StopListening] = [
        ListenFor(execution_id=after.execution_id, step=key, subject=subject)
        for key, subject in now.items()
        if key not in was
    ]
    if ended := tuple(key for key in was if key not in now):
        out.append(StopListening(execution_id=after.execution_id, steps=ended))
    return out


def _waits_resent(events: tuple[AnyEvent, ...], state: ExecutionState) -> list[AnyCommand]:
    """What a decision's subject waits still mean now: a wait it began and still open is
    recorded again; one it ended is removed again."""
    began = {e.step for e in events if isinstance(e, WaitStarted)}
    out: list[AnyCommand] = [
        c for c in _listen_changes(INITIAL, state) if isinstance(c, ListenFor) and c.step in began
    ]
    ended = tuple(
        dict.fromkeys(
            e.step
            for e in events
            if isinstance(e, StepCompleted | StepAttemptFailed)
            and (step := state.steps.get(e.step)) is not None
            and step.wait_subject is not None
            and step.status != "waiting"
        )
    )
    if ended:
        out.append(StopListening(execution_id=state.execution_id, steps=ended))
    return out


def _stop_listening(state: ExecutionState) -> list[StopListening]:
    """One command for every subject wait of ``state`` that may still be recorded."""
    steps = tuple(
        key
        for key, step in state.steps.items()
        if step.wait_subject is not None and step.status in ("waiting", "ready", "cancelled")
    )
    return [StopListening(execution_id=state.execution_id, steps=steps)] if steps else []


# --- child workflows -----------------------------------------------------------------


def _start_child(execution: str, key: str, step: StepState) -> StartChild:
    """The start of a ``workflow`` step's child; its input is the step's rendered ``with``."""
    params = step.input if isinstance(step.input, dict) else {}
    assert step.child is not None
    return StartChild(
        execution_id=execution,
        step=key,
        attempt=step.attempt,
        iteration=step.iteration,
        child=step.child,
        workflow=str(params.get("workflow", "")),
        input=params.get("input"),
    )


def _family(before: ExecutionState, after: ExecutionState) -> list[AnyCommand]:
    """What an ended execution owes its family: its parent told how it ended, and the
    children still running (as of ``before``, and not finished by the batch) cancelled:
    nobody waits for them any more."""
    execution = after.execution_id
    out: list[AnyCommand] = []
    if after.parent is not None:
        error = f"{execution} {after.status}: {after.error}" if after.error else None
        out.append(
            NotifyParent(
                execution_id=execution,
                parent=after.parent,
                status=after.status,
                output=after.output if after.status == "completed" else None,
                error=error,
                events=after.events,
            )
        )
    reason = f"parent {execution} {after.status}"
    for key, step in before.steps.items():
        now = after.steps.get(key, step)
        # "cancelled" with its attempt closed so: in flight when the execution was
        # cancelled (resent then); one cancelled while waiting to retry has no child
        in_flight = step.status == "scheduled" or (
            step.status == "cancelled"
            and bool(step.attempts)
            and step.attempts[-1].kind == "cancelled"
        )
        if step.child and in_flight and now.status not in _SETTLED:
            workflow = step.input.get("workflow") if isinstance(step.input, dict) else None
            out.append(
                CancelChild(
                    execution_id=execution,
                    child=step.child,
                    reason=reason,
                    workflow=workflow if isinstance(workflow, str) else None,
                )
            )
    return out


# Steps whose child is not running any more (a step's own statuses, not the execution's).
_SETTLED = frozenset({"completed", "failed", "skipped"})
