"""What a code workflow may store: JSON values, msgspec Structs and dataclasses.

Step arguments, step results, workflow inputs and outputs become events, so they
must survive a JSON round trip. ``storable`` turns a value into JSON builtins or
raises ``NotStorable`` naming the workflow, the step and the type, at the place
the value was made (the step call for an argument, the step for its result);
``typed`` turns stored builtins back into the annotated type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from natsflow.events.errors import NatsflowError

ADVICE = "return JSON values, a msgspec Struct or a dataclass"


class NotStorable(NatsflowError, TypeError):
    """A value crossing a durable boundary cannot be stored as JSON."""


def storable(value: Any, what: str) -> Any:
    """``value`` as JSON builtins; ``NotStorable`` saying ``what`` made it otherwise.

    ``what`` reads as the start of a sentence: ``"step create_sandbox of workflow
    sync_docs returned"``.
    """
    try:
        return msgspec.to_builtins(value, str_keys=True)
    except TypeError:
        kind = type(_culprit(value)).__name__
        raise NotStorable(f"{what} a {kind}, which cannot be stored: {ADVICE}") from None


def _culprit(value: Any) -> Any:
    """The first part of ``value`` that cannot be stored (to name its type)."""
    if isinstance(value, dict):
        for item in value.values():
            if _unsupported(item):
                return _culprit(item)
    elif isinstance(value, list | tuple):
        for item in value:
            if _unsupported(item):
                return _culprit(item)
    return value


def _unsupported(value: Any) -> bool:
    try:
        msgspec.to_builtins(value, str_keys=True)
    except TypeError:
        return True
    return False


def typed(value: Any, kind: Any, what: str) -> Any:
    """Stored builtins ``value`` as ``kind`` (a type hint; ``Any``: as they are)."""
    if kind is Any or kind is None:
        return value
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise NotStorable(f"{what}: {exc}") from None
