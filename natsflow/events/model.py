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
    """A ``for_each`` step became ready: one child per item, with item-level ``needs``
    (must complete) and ``after`` (must finish: ordering only; empty if none has any)."""

    step: str
    keys: tuple[str, ...]
    items: tuple[Any, ...]
    needs: tuple[tuple[str, ...], ...]
    after: tuple[tuple[str, ...], ...] = ()


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


class ExecutionResumed(Event, frozen=True, tag="execution_resumed"):
    """A failed execution goes on (``natsflow resume``): running again, its error cleared.

    ``retried`` steps (and fan-out items) failed after dispatching attempts: each takes
    its next attempt where it stopped (a ``repeat`` step at the iteration that failed).
    ``rerun`` steps start afresh: forgotten (a fan-out item goes back to pending, a
    fan-out step's items go with it). ``reopened`` fan-out steps wait for their items
    again. ``attempts_before``: per step key, the attempt numbers used so far; new
    attempts are numbered after them (an idempotency key never repeats) and the retry
    budget counts from there. ``from_step``: the step ``--from`` named, if any.
    """

    retried: tuple[str, ...] = ()
    rerun: tuple[str, ...] = ()
    reopened: tuple[str, ...] = ()
    attempts_before: dict[str, int] = msgspec.field(default_factory=dict)
    from_step: str | None = None


class ExecutionPaused(Event, frozen=True, tag="execution_paused"):
    """Nothing new is dispatched until ``execution_unpaused``; results are still recorded."""

    reason: str = ""


class ExecutionUnpaused(Event, frozen=True, tag="execution_unpaused"):
    """Decisions go on: what results and timers unlocked while paused is dispatched now."""


class StepDeadlineSet(Event, frozen=True, tag="step_deadline_set"):
    """The engine keeps a deadline for one attempt: a durable timer that fails the
    attempt (with ``kind``) if it is still awaited when the timer fires.

    ``kind`` is ``"timeout"`` (set when the attempt is dispatched: its ``timeout``
    plus a grace) or ``"heartbeat"`` (moved on by the worker's progress reports;
    each move is a new ``timer_id``, the old timer fires into nothing).
    """

    step: str
    attempt: Attempt
    timer_id: str
    due: float
    kind: str = "timeout"
    iteration: Count = 0


class SignalReceived(Event, frozen=True, tag="signal_received"):
    """A signal reached the execution. Kept until a ``wait`` for ``name`` consumes it;
    with ``step`` set, a message on the subject that step waits for (consumed at once)."""

    name: str
    data: Any = None
    signal_id: str = ""
    step: str | None = None


class WaitStarted(Event, frozen=True, tag="wait_started"):
    """A ``wait`` step began: it waits for signal ``signal`` or a message on ``subject``
    (its timeout, if any, is a ``timer_started`` of purpose ``wait`` after this)."""

    step: str
    signal: str | None = None
    subject: str | None = None
    input: Any = None


class SignalConsumed(Event, frozen=True, tag="signal_consumed"):
    """The oldest pending signal ``name`` (``signal_id``) went to the wait of ``step``."""

    name: str
    step: str
    signal_id: str = ""


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
    | ExecutionResumed
    | ExecutionPaused
    | ExecutionUnpaused
    | StepDeadlineSet
    | SignalReceived
    | WaitStarted
    | SignalConsumed
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
    "cancelled",  # in flight when the execution was cancelled
]
TERMINAL_STEP = frozenset({"completed", "failed", "skipped", "cancelled"})

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_EXECUTION = frozenset({"completed", "failed", "cancelled"})


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a step, for ``show``: when it ran and how it ended."""

    attempt: int
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    kind: str | None = None


class Deadline(msgspec.Struct, frozen=True, kw_only=True):
    """One deadline the engine keeps for the attempt in flight (see ``StepDeadlineSet``)."""

    timer_id: str
    due: float
    kind: str = "timeout"


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
    item_after: tuple[str, ...] = ()
    # the engine's own deadlines for the attempt in flight (its timeout, its heartbeat)
    deadlines: tuple[Deadline, ...] = ()
    child: str | None = None  # a ``workflow`` step: its child execution's id

    @property
    def wait_signal(self) -> str | None:
        """The signal a ``wait`` step waits (or waited) for, from its rendered params."""
        return _wait_param(self, "signal")

    @property
    def wait_subject(self) -> str | None:
        """The subject a ``wait`` step waits (or waited) for, from its rendered params."""
        return _wait_param(self, "subject")


def _wait_param(step: StepState, key: str) -> str | None:
    if step.action != "wait" or not isinstance(step.input, dict):
        return None
    value = step.input.get(key)
    return value if isinstance(value, str) else None


class PendingSignal(msgspec.Struct, frozen=True, kw_only=True):
    """A signal kept for a ``wait`` that has not begun yet."""

    signal_id: str = ""
    data: Any = None
    at: float = 0.0


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
    # paused: results are recorded, nothing new is dispatched (status stays "running")
    paused: bool = False
    # per step key, attempt numbers used before a resume re-ran it (ExecutionResumed)
    attempts_before: dict[str, int] = msgspec.field(default_factory=dict)
    # signals received and not consumed by a wait yet, per name, oldest first
    signals: dict[str, tuple[PendingSignal, ...]] = msgspec.field(default_factory=dict)
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
