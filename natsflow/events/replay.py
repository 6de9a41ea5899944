"""Replaying a recorded history: does this code still decide what was decided then?

A history is the list of decisions an execution's actor made, each a
``RecordedDecision``: the inbox message it handled, the time it decided at and
the events it appended (none for a message that changed nothing: a duplicate
result, a stale timer). ``replay`` feeds the messages to a ``Decider`` in order
and compares, decision by decision, the events it decides now with the ones
recorded; the first difference raises ``NondeterminismError`` naming the
execution, the step, both events (rendered short: type, step, key fields) and
the decision's position. It is how a change to a decider is checked against
golden histories (``tests/histories/``) before it meets a running execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec.structs import replace

from natsflow.events.decider import Decider
from natsflow.events.errors import NondeterminismError
from natsflow.events.messages import AnyInbox
from natsflow.events.model import INITIAL, AnyEvent, ExecutionState, StepAttemptFailed

__all__ = ["RecordedDecision", "describe", "replay"]


class RecordedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of a history: ``message`` handled at ``now`` appended ``events``."""

    message: AnyInbox
    now: float
    events: tuple[AnyEvent, ...] = ()


def replay(
    decider: Decider,
    execution: str,
    recorded: Sequence[RecordedDecision],
    *,
    state: ExecutionState | None = None,
) -> ExecutionState:
    """Decide every recorded message again; the state after the last decision.

    ``state`` is where the history starts (a snapshot's state); by default a
    new execution's, as its actor creates it. ``position`` in an error counts
    the decisions of ``recorded`` from 0. A decider that raises on a recorded
    message is a difference too (the original error is the cause).
    """
    if state is None:
        state = replace(INITIAL, execution_id=execution)
    for position, entry in enumerate(recorded):
        try:
            decision = decider.react(state, entry.message, entry.now)
        except Exception as exc:
            raise NondeterminismError(
                execution,
                _step_of(*entry.events[:1], entry.message),
                f"an error ({_short(f'{type(exc).__name__}: {exc}', 120)})",
                _describe_first(entry.events),
                position,
            ) from exc
        if decision.events != entry.events:
            raise _difference(execution, position, entry, decision.events)
        state = decision.state
    return state


def _difference(
    execution: str, position: int, entry: RecordedDecision, decided: tuple[AnyEvent, ...]
) -> NondeterminismError:
    """The error for the first event where ``decided`` and the recording part."""
    index = next(
        (i for i, (a, b) in enumerate(zip(decided, entry.events, strict=False)) if a != b),
        min(len(decided), len(entry.events)),
    )
    expected = decided[index] if index < len(decided) else None
    recorded = entry.events[index] if index < len(entry.events) else None
    step = _step_of(recorded, expected, entry.message)
    return NondeterminismError(
        execution,
        step,
        _describe_or_nothing(expected, recorded),
        _describe_or_nothing(recorded, expected),
        position,
    )


def _step_of(*sources: AnyEvent | AnyInbox | None) -> str | None:
    """The step the first of ``sources`` that names one names (the history's event first)."""
    steps = (getattr(source, "step", None) for source in sources)
    return next((step for step in steps if isinstance(step, str)), None)


def _describe_first(events: tuple[AnyEvent, ...]) -> str:
    return describe(events[0]) if events else "nothing"


def _describe_or_nothing(event: AnyEvent | None, other: AnyEvent | None) -> str:
    return "nothing" if event is None else describe(event, other)


# Fields worth reading in every rendering, in this order, after the step.
_KEY_FIELDS = (
    "workflow",
    "version",
    "attempt",
    "iteration",
    "action",
    "kind",
    "retry_at",
    "timer_id",
    "purpose",
    "due",
    "final",
    "message",
    "keys",
    "reason",
    "error",
)
# Values of key fields not worth printing: they say what the default says.
_QUIET: dict[str, Any] = {"iteration": 0, "final": True}


def describe(event: AnyEvent, other: AnyEvent | None = None) -> str:
    """A one-line rendering of ``event``: its type, step and key fields.

    With ``other`` (the event it is compared with), every further field whose
    value differs is shown too, so two renderings never read the same when
    the events differ:

    >>> from natsflow.events.model import StepScheduled
    >>> a = StepScheduled(at=5.0, step="fetch", attempt=1, action="noop", input={"n": 1})
    >>> describe(a)
    'step_scheduled(fetch, attempt=1, action=noop)'
    >>> describe(a, msgspec.structs.replace(a, input={"n": 2}))
    'step_scheduled(fetch, attempt=1, action=noop, input={"n":1})'
    """
    fields = msgspec.structs.asdict(event)
    parts: list[str] = []
    step = fields.pop("step", None)
    if step is not None:
        parts.append(_short(step))
    for name in _KEY_FIELDS:
        value = fields.get(name)
        if name in fields and value is not None and _QUIET.get(name, ...) != value:
            parts.append(f"{name}={_short(value)}")
        elif name == "retry_at" and isinstance(event, StepAttemptFailed):
            parts.append("no retry")
    if other is not None and type(other) is type(event):
        theirs = msgspec.structs.asdict(other)
        parts.extend(
            f"{name}={_short(value)}"
            for name, value in fields.items()
            if name not in _KEY_FIELDS and value != theirs.get(name)
        )
    tag = type(event).__struct_config__.tag
    return f"{tag}({', '.join(parts)})"


def _short(value: Any, limit: int = 60) -> str:
    """``value`` as compact text (strings as they are, the rest as JSON), cut at ``limit``."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
