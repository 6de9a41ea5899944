"""Wire messages between natsflow and workers (JSON, documented in the README).

Inbox messages go to ``natsflow.in.<execution>`` and are what an execution
actor reacts to; a task goes to ``natsflow.task.<action>`` for a worker. These
are the formats a worker in any language speaks, so they are plain JSON with
a ``kind`` tag and names that read well.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from natsflow.events.model import Attempt, Count, ExecutionState, ParentLink, TriggerInfo


class Inbox(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of everything an execution actor receives."""


class Start(Inbox, frozen=True, tag="start"):
    workflow: str
    version: str
    input: Any = None
    idempotency_key: str | None = None
    trigger: TriggerInfo | None = None
    parent: ParentLink | None = None


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    kind: str = "error"
    retryable: bool = True
    retry_after: Annotated[float, Meta(ge=0)] | None = None


class Result(Inbox, frozen=True, tag="result"):
    """A worker's answer for one attempt: ``output`` when ``ok``, else ``error``."""

    step: str
    attempt: Attempt
    ok: bool
    output: Any = None
    error: ErrorInfo | None = None
    iteration: Count = 0


class Progress(Inbox, frozen=True, tag="progress"):
    step: str
    attempt: Attempt
    message: str
    iteration: Count = 0


class TimerDue(Inbox, frozen=True, tag="timer"):
    """Delivered by a JetStream message schedule when a durable timer is due."""

    timer_id: str
    step: str


class Cancel(Inbox, frozen=True, tag="cancel"):
    reason: str = ""


class Resume(Inbox, frozen=True, tag="resume"):
    """Resume a failed execution (``from_step``: re-run that step and what depends on it)."""

    from_step: str | None = None


class Pause(Inbox, frozen=True, tag="pause"):
    reason: str = ""


class Unpause(Inbox, frozen=True, tag="unpause"):
    pass


class Signal(Inbox, frozen=True, tag="signal"):
    """A signal for the execution (only through the admin API): kept until a ``wait`` for
    ``name`` consumes it. ``id`` makes a repeated send count once (its ``Nats-Msg-Id``).
    With ``step`` set, it is a message heard on the subject that step waits for
    (forwarded by natsflow's waits actor; ``name`` is then the message's subject)."""

    name: str
    data: Any = None
    id: str = ""
    step: str | None = None


class ChildEnded(Inbox, frozen=True, tag="child_ended"):
    """To a parent: the child execution its ``workflow`` step started has ended (``status``
    completed, failed or cancelled), or could not start (``not_started``, with ``error``).

    From the child itself ``attempt`` is None: it answers whichever attempt of the step
    waits for it (a later attempt waits for the same child). The engine's start of a
    child sets it to the attempt it started for.
    """

    step: str
    child: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None
    attempt: Attempt | None = None


AnyInbox = (
    Start | Result | Progress | TimerDue | Cancel | Resume | Pause | Unpause | Signal | ChildEnded
)


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a step, for a worker; the result goes to ``reply_to``."""

    execution_id: str
    step: str
    attempt: Attempt
    action: str
    input: Any = None
    timeout: float | None = None
    iteration: Count = 0
    idempotency_key: str
    reply_to: str


def misdirected(state: ExecutionState, message: AnyInbox) -> str | None:
    """Why ``message`` cannot be for the execution whose state (read just now) is ``state``;
    None if it can, even when it changes nothing.

    An execution that was never started, a step it never scheduled, an attempt (or
    iteration) beyond the latest it scheduled: tasks go out only after the decision that
    schedules them is stored, so these are a sender's mistakes. A result for an older
    attempt, or one arriving after its step finished, is ordinary at-least-once traffic
    (``awaits_result`` says it is not awaited) and is not misdirected; nor is a timer of
    a known step (an old timer of a step scheduled again).
    """
    if state.status == "pending":
        if isinstance(message, Start):
            return None
        return f"no such execution (a {message.__struct_config__.tag} message for it)"
    match message:
        case Result() | Progress():
            kind = message.__struct_config__.tag
            step = state.steps.get(message.step)
            if step is None and message.step in state.attempts_before:
                return None  # a step forgotten by a resume: a late answer of an earlier run
            if step is None:
                return f"{kind} for step {message.step!r}, which the execution has not scheduled"
            if (message.iteration, message.attempt) > (step.iteration, step.attempt):
                loop = f" of iteration {message.iteration}" if message.iteration else ""
                return (
                    f"{kind} for attempt {message.attempt}{loop} of step {message.step!r},"
                    f" which the execution has not scheduled (latest: attempt {step.attempt}"
                    + (f" of iteration {step.iteration})" if step.iteration else ")")
                )
        case TimerDue():
            if message.step not in state.steps:
                return f"timer for step {message.step!r}, which the execution does not have"
        case ChildEnded():
            if message.step not in state.steps:
                return f"child_ended for step {message.step!r}, which the execution does not have"
        case Start() | Cancel() | Resume() | Pause() | Unpause() | Signal():
            pass
    return None


inbox_decoder = msgspec.json.Decoder(AnyInbox)
task_decoder = msgspec.json.Decoder(Task)
json_encoder = msgspec.json.Encoder()


def signal_msg_id(execution_id: str, signal_id: str) -> str:
    """The ``Nats-Msg-Id`` of a signal: the same id sent twice is stored once."""
    return f"signal:{execution_id}:{signal_id}"


def idempotency_key(execution_id: str, step: str, attempt: int, iteration: int = 0) -> str:
    """The key a handler gets to make its side effect exactly-once: one per attempt."""
    if iteration:
        return f"{execution_id}:{step}#{iteration}:{attempt}"
    return f"{execution_id}:{step}:{attempt}"


class CancelNotice(msgspec.Struct, frozen=True, kw_only=True):
    """Told to every worker (core NATS, ``natsflow.cancel.<execution>``) when an execution
    is cancelled: stop running these steps of it; their results are not awaited."""

    execution_id: str
    steps: tuple[str, ...] = ()
    reason: str = ""


cancel_notice_decoder = msgspec.json.Decoder(CancelNotice)
