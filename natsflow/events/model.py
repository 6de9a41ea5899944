"""Event and state types of an execution.

Events are facts appended to the execution's subject; the state is a pure
fold over them (``events.fold.evolve``). Persisted structs never forbid
unknown fields (an older reader must accept a newer event); a new field gets
a default, a type never changes, a breaking change is a new tag.

Every event names a step by its *key*: the manifest step name, or
``name[key]`` for a child of a ``for_each`` fan-out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Attempt = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=0)]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event; ``at`` is wall-clock seconds, passed in by the actor."""

    at: float


class TriggerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The message that started an execution through a trigger subject."""

    subject: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class ExecutionStarted(Event, frozen=True, tag="execution_started"):
    execution_id: str
    workflow: str
    version: str
    input: Any = None
    idempotency_key: str | None = None
    trigger: TriggerInfo | None = None
    parent: ParentLink | None = None  # set for a child execution (the ``workflow`` action)


class StepScheduled(Event, frozen=True, tag="step_scheduled"):
    """A task for one attempt was dispatched to workers with these rendered params."""

    step: str
    attempt: Attempt
    action: str
    input: Any = None
    timeout: float | None = None
    iteration: Count = 0
    child: str | None = None  # the child execution a ``workflow`` step starts, by id


class StepProgressed(Event, frozen=True, tag="step_progressed"):
    step: str
    attempt: Attempt
    message: str
    iteration: Count = 0


class StepCompleted(Event, frozen=True, tag="step_completed"):
    """An attempt (or an iteration of a repeating step) succeeded.

    ``final`` is False for an iteration of a ``repeat`` step whose ``until``
    does not hold yet: the step then goes on with the next iteration.
    """

    step: str
    attempt: Count
    output: Any = None
    iteration: Count = 0
    final: bool = True


class StepAttemptFailed(Event, frozen=True, tag="step_attempt_failed"):
    """An attempt failed; with ``retry_at`` set another attempt follows, else the step failed."""

    step: str
    attempt: Count
    error: str
    kind: str = "error"
    retry_at: float | None = None
    iteration: Count = 0


class StepSkipped(Event, frozen=True, tag="step_skipped"):
    step: str
    reason: str


class StepFannedOut(Event, frozen=True, tag="step_fanned_out"):
    """A ``for_each`` step became ready: one child per item, with item-level ``needs``."""

    step: str
    keys: tuple[str, ...]
    items: tuple[Any, ...]
    needs: tuple[tuple[str, ...], ...]


class TimerStarted(Event, frozen=True, tag="timer_started"):
    """A durable timer: the wake-up is a scheduled message, so it survives restarts."""

    timer_id: str
    step: str
    due: float
    # "retry", "sleep" or "repeat" today: a str, so an older reader accepts a newer one.
    purpose: str


class TimerFired(Event, frozen=True, tag="timer_fired"):
    timer_id: str
    step: str


class ExecutionCompleted(Event, frozen=True, tag="execution_completed"):
    output: Any = None


class ExecutionFailed(Event, frozen=True, tag="execution_failed"):
    error: str
    step: str | None = None


class ExecutionCancelled(Event, frozen=True, tag="execution_cancelled"):
    reason: str = ""


AnyEvent = (
    ExecutionStarted
    | StepScheduled
    | StepProgressed
    | StepCompleted
    | StepAttemptFailed
    | StepSkipped
    | StepFannedOut
    | TimerStarted
    | TimerFired
    | ExecutionCompleted
    | ExecutionFailed
    | ExecutionCancelled
)

StepStatus = Literal[
    "pending",  # a fan-out child not started yet
    "scheduled",  # an attempt is with a worker
    "waiting",  # waiting for a timer (retry backoff, sleep, pause between iterations)
    "ready",  # a timer fired; the next attempt, iteration or sleep's end is due now
    "looping",  # an iteration of a repeat step completed; the next one is to start
    "fanned_out",  # children are running
    "completed",
    "failed",
    "skipped",
]
TERMINAL_STEP = frozenset({"completed", "failed", "skipped"})

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_EXECUTION = frozenset({"completed", "failed", "cancelled"})


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a step, for ``show``: when it ran and how it ended."""

    attempt: int
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    kind: str | None = None


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    """What the fold knows of one step (or fan-out child)."""

    status: StepStatus
    action: str = ""
    attempt: Count = 0
    iteration: Count = 0
    input: Any = None
    timeout: float | None = None
    output: Any = None
    error: str | None = None
    kind: str | None = None
    progress: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    timer_id: str | None = None
    due: float | None = None
    # fan-out: a parent lists its children; a child knows its parent, item and item-level needs
    children: tuple[str, ...] = ()
    parent: str | None = None
    item: Any = None
    item_needs: tuple[str, ...] = ()
    child: str | None = None  # a ``workflow`` step: its child execution's id


class ExecutionState(msgspec.Struct, frozen=True, kw_only=True):
    """The fold of an execution's events. ``steps`` is never mutated, only replaced."""

    execution_id: str = ""
    workflow: str = ""
    version: str = ""
    status: ExecutionStatus = "pending"
    input: Any = None
    idempotency_key: str | None = None
    trigger: TriggerInfo | None = None  # the trigger message's subject and headers, if any
    steps: dict[str, StepState] = msgspec.field(default_factory=dict)
    output: Any = None
    error: str | None = None
    failed_step: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    events: Count = 0  # how many events the fold has seen: the resume point
    parent: ParentLink | None = None  # a child execution: the parent and its step


INITIAL = ExecutionState()


def awaits_result(state: ExecutionState, step: str, attempt: int, iteration: int) -> bool:
    """Whether ``state`` still waits for this attempt's result: a result for any other
    attempt is ignored, and a task delivered again for one is not worth running."""
    current = state.steps.get(step)
    return (
        state.status == "running"
        and current is not None
        and current.status == "scheduled"
        and current.attempt == attempt
        and current.iteration == iteration
    )


class ParentLink(msgspec.Struct, frozen=True, kw_only=True):
    """A child execution's parent: its id and the ``workflow`` step that started the child."""

    execution_id: str
    step: str
