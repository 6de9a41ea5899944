"""Read views of an execution: what ``ls`` lists and ``show`` prints, derived from its state.

Views are persisted (summaries in KV) and sent to clients, so they decode
leniently: a field added by a newer natsflow is ignored by an older reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec.structs import replace

from natsflow.events.errors import Undecodable
from natsflow.events.model import (
    TERMINAL_STEP,
    AttemptRecord,
    ExecutionState,
    ParentLink,
    StepState,
)
from natsflow.events.plan import Plan, PlannedStep, Told, execution_error, tell
from natsflow.events.queues import ActionQueue, worker_wanted

# The status of an ``ls`` row whose summary cannot be decoded (not an execution status).
UNKNOWN_STATUS = "unknown"


class ExecutionSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The row ``ls`` shows, kept in the KV bucket ``natsflow_executions``."""

    execution_id: str
    workflow: str
    version: str
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    failed_step: str | None = None
    paused: bool = False  # running, but dispatching nothing new (natsflow pause)
    # What the execution index (``natsflow.actors.index``) keeps besides; defaults for
    # summaries written before these fields existed.
    updated_at: float | None = None
    current: tuple[str, ...] = ()  # top-level steps begun and not finished
    steps_done: int = 0  # top-level steps completed or skipped
    steps_total: int | None = None  # steps in its definition (the index adds it)
    parent: str | None = None  # a child execution: its parent's id
    trigger: str | None = None  # the trigger subject whose message started it
    idempotency_key: str | None = None  # a schedule's start: ``schedule:<workflow>:...``


def progress_of(state: ExecutionState) -> tuple[tuple[str, ...], int]:
    """The top-level steps begun and not finished, and how many are done: what the
    summary says of progress (a fan-out's children are inside their parent step)."""
    top = [(key, step) for key, step in state.steps.items() if step.parent is None]
    current = tuple(key for key, step in top if step.status not in TERMINAL_STEP)
    return current, sum(1 for _, step in top if step.status in ("completed", "skipped"))


def summary_changed(before: ExecutionState, after: ExecutionState) -> bool:
    """Whether ``after``'s summary is worth a write: its status or pause changed, or its
    progress through the top-level steps did and the batch is in a later second than the
    event before it.

    A summary write per step cost a third of the throughput of fast executions (a KV
    write, and the index applying it); their ``ls`` row says where they are when they
    end. A slow execution's progress is written at most about once a second, and the
    rule reads only event times, so the same events always give the same commands.
    """
    if before.status != after.status or before.paused != after.paused:
        return True
    if int(before.updated_at or 0) == int(after.updated_at or 0):
        return False
    return progress_of(before) != progress_of(after)


def summary_of(state: ExecutionState) -> ExecutionSummary:
    current, done = progress_of(state)
    return ExecutionSummary(
        execution_id=state.execution_id,
        workflow=state.workflow,
        version=state.version,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        failed_step=state.failed_step,
        paused=state.paused and state.status == "running",
        updated_at=state.updated_at,
        current=current if state.status == "running" else (),
        steps_done=done,
        parent=state.parent.execution_id if state.parent is not None else None,
        trigger=state.trigger.subject if state.trigger is not None else None,
        idempotency_key=state.idempotency_key,
    )


def parked_summary(
    execution: str, error: str, previous: ExecutionSummary | None, now: float
) -> ExecutionSummary:
    """The ``ls`` row of an execution parked because its history cannot be read: failed,
    with ``error``, keeping the workflow and start time of its ``previous`` row.

    A row parked already with the same error is returned as it is, so parking again (a
    later activation, another instance) is recognisable and writes nothing new.
    """
    if previous is not None and previous.status == "failed" and previous.error == error:
        return previous
    return ExecutionSummary(
        execution_id=execution,
        workflow=previous.workflow if previous else "",
        version=previous.version if previous else "",
        status="failed",
        started_at=previous.started_at if previous else None,
        finished_at=now,
        error=error,
    )


def unreadable_summary(execution: str, error: str) -> ExecutionSummary:
    """The ``ls`` row standing for a summary that cannot be decoded: status ``unknown``."""
    return ExecutionSummary(
        execution_id=execution, workflow="", version="", status=UNKNOWN_STATUS, error=error
    )


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """What starting an execution answers (``natsflow.actors.starter.Starter.start``).

    ``created`` is False when the idempotency key was claimed by an earlier
    start: ``execution_id`` is then that execution's, and ``version`` the one
    a new start would have pinned (the earlier execution keeps its own).
    """

    execution_id: str
    workflow: str
    version: str
    created: bool


class ResumePoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where an execution's actor resumes: events folded so far, the stream sequence after them."""

    events: int
    stream_seq: int


class Parked(msgspec.Struct, frozen=True, kw_only=True):
    """Where an execution's stored history stops being readable (``Undecodable``): the
    execution is parked as failed, and a copy of that message is in the dead letters."""

    what: str
    stream: str
    subject: str
    seq: int
    reason: str


def parked_at(problem: Undecodable) -> Parked:
    return Parked(
        what=problem.what,
        stream=problem.stream,
        subject=problem.subject,
        seq=problem.seq,
        reason=problem.reason,
    )


def parked_state(
    state: ExecutionState, error: str, summary: ExecutionSummary | None
) -> ExecutionState:
    """``state`` (what could be read of the history) as a parked execution: failed with
    ``error``. What the history cannot say (nothing, behind an unreadable snapshot) comes
    from the execution's ``summary``, and so does the time it was parked."""
    if summary is not None and not state.workflow:
        state = replace(
            state,
            workflow=summary.workflow,
            version=summary.version,
            started_at=summary.started_at,
        )
    parked_then = summary is not None and summary.status == "failed" and summary.error == error
    finished = summary.finished_at if summary is not None and parked_then else None
    return replace(state, status="failed", error=error, finished_at=finished)


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    """One step (or fan-out child) as ``show`` prints it."""

    status: str
    action: str
    attempt: int
    iteration: int
    progress: str | None
    error: str | None
    error_kind: str | None
    started_at: float | None
    finished_at: float | None
    due: float | None
    parent: str | None
    attempts: tuple[AttemptRecord, ...]
    # a ``wait`` step that waits now: "signal NAME" or "subject S"
    waiting_for: str | None = None
    child: str | None = None  # a ``workflow`` step: its child execution
    # why it has its status (pending, blocked, skipped, not_run): ``events.plan``
    reason: str | None = None


class ExecutionView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``show`` prints: status, progress through the steps, each step's attempts."""

    execution_id: str
    workflow: str
    version: str
    status: str
    started_at: float | None
    finished_at: float | None
    input: Any
    output: Any
    error: str | None
    failed_step: str | None
    steps_done: int
    steps_total: int
    current: tuple[str, ...]
    resume_point: ResumePoint
    steps: dict[str, StepView]
    parked: Parked | None = None
    # running but dispatching nothing new until unpaused (natsflow pause)
    paused: bool = False
    # the step ``natsflow resume`` starts from, for a failed execution that can resume
    resume_at: str | None = None
    parent: ParentLink | None = None  # a child execution: its parent and the step


def execution_view(
    state: ExecutionState,
    last_seq: int,
    total: int,
    parked: Parked | None = None,
    plan: Plan = (),
    queues: Mapping[str, ActionQueue] | None = None,
) -> ExecutionView:
    """The ``show`` view of ``state`` (read up to stream sequence ``last_seq``), of ``total``
    top-level steps in its definition; ``parked`` says where its history became unreadable.

    Every step of ``plan`` (the definition's steps) is shown, begun or not, with the
    status and reason ``events.plan`` tells; fan-out children follow their parent. A
    scheduled step of a custom action in ``queues`` (its task queue, by action) says so
    when it waits for a worker."""
    top = [v for v in state.steps.values() if v.parent is None]
    specs = {planned.name: planned for planned in plan}
    return ExecutionView(
        execution_id=state.execution_id,
        workflow=state.workflow,
        version=state.version,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        input=state.input,
        output=state.output,
        error=execution_error(state),
        failed_step=state.failed_step,
        steps_done=sum(1 for v in top if v.status in ("completed", "skipped")),
        steps_total=total,
        current=tuple(k for k, v in state.steps.items() if v.status not in TERMINAL_STEP),
        resume_point=ResumePoint(events=state.events, stream_seq=last_seq),
        steps={
            key: told_step_view(key, state.steps.get(key), told, specs, queues)
            for key, told in tell(state, plan).items()
        },
        parked=parked,
        paused=state.paused and state.status == "running",
        resume_at=state.failed_step if state.status == "failed" and parked is None else None,
        parent=state.parent,
    )


def step_view(step: StepState) -> StepView:
    return StepView(
        status=step.status,
        action=step.action,
        attempt=step.attempt,
        iteration=step.iteration,
        progress=step.progress,
        error=step.error,
        error_kind=step.kind,
        started_at=step.started_at,
        finished_at=step.finished_at,
        due=step.due,
        parent=step.parent,
        attempts=step.attempts,
        waiting_for=waiting_for(step),
        child=step.child,
    )


def waiting_for(step: StepState) -> str | None:
    """What a waiting ``wait`` step waits for, in words: ``signal approve``, ``subject a.b``."""
    if step.status != "waiting":
        return None
    if step.wait_signal is not None:
        return f"signal {step.wait_signal}"
    if step.wait_subject is not None:
        return f"subject {step.wait_subject}"
    return None


def told_step_view(
    key: str,
    step: StepState | None,
    told: Told,
    specs: dict[str, PlannedStep],
    queues: Mapping[str, ActionQueue] | None = None,
) -> StepView:
    """The view of step ``key`` (None: not begun) with the status ``events.plan`` told; a
    scheduled step whose action's queue (``queues``) has no worker says it waits for one."""
    spec = specs.get(step.parent if step is not None and step.parent else key)
    action = spec.action if spec is not None else ""
    if step is None:
        step = StepState(status="pending", action=action)
    elif not step.action:
        step = replace(step, action=action)  # a fan-out child not dispatched yet
    reason = told.reason
    queue = (queues or {}).get(step.action) if told.status == "scheduled" else None
    if queue is not None:
        reason = worker_wanted(queue) or reason
    return replace(step_view(step), status=told.status, reason=reason)
