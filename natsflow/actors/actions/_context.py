"""What every action receives (`ActionContext`) and the shared parameter conversion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from nats.aio.client import Client as NatsClient

from natsflow.events.errors import TerminalStepError
from natsflow.manifests.actions import ActionSpec, Params, ParamsError

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Action",
    "ActionContext",
    "PythonFunction",
    "convert_params",
    "with_idempotency_key",
]

#: Header carrying `ActionContext.idempotency_key` on HTTP requests and NATS requests.
#: Not `Nats-Msg-Id`: that one is JetStream's dedupe header and means something else
#: to a stream that happens to capture the request subject.
IDEMPOTENCY_HEADER = "Natsflow-Idempotency-Key"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext:
    """One attempt of one step, as an action sees it.

    A plain dataclass rather than a msgspec Struct: it is never serialized, and it
    holds live objects (a callback, a NATS client).
    """

    execution_id: str
    step: str
    """The step key, e.g. ``"fetch"`` or ``"sync[orders]"`` for a ``for_each`` item."""
    attempt: int
    """1-based attempt number."""
    idempotency_key: str
    """Passed on to the handler (header `IDEMPOTENCY_HEADER`, env
    ``NATSFLOW_IDEMPOTENCY_KEY``); the runtime builds it, actions never do."""
    report_progress: Callable[[str], Awaitable[None]]
    """Report a line of progress text; the runtime throttles, so call it freely."""
    nc: NatsClient | None = None
    """A connected client, for ``nats.request``; ``None`` where no action needs one."""
    kill_grace: float | None = None
    """Seconds a stopped ``shell`` step's processes get between SIGTERM and SIGKILL
    (``NATSFLOW_CANCEL_GRACE``); ``None``: the action's default."""


#: A step action: the context and the step's rendered ``with`` mapping in, a
#: JSON-serializable output out. Raises `TerminalStepError` or `RetryableStepError`.
Action: TypeAlias = Callable[[ActionContext, dict[str, Any]], Awaitable[Any]]

#: A callable for the ``python`` action: ``fn(ctx, args)``, sync or async.
PythonFunction: TypeAlias = Callable[[ActionContext, dict[str, Any]], Any]

_P = TypeVar("_P", bound=Params)


def convert_params(action: ActionSpec[_P], params: Mapping[str, Any]) -> _P:
    """The step's rendered ``with`` as ``action``'s params struct, or `TerminalStepError`.

    The catalogue's own check, as at deploy (durations parsed, cross-field rules),
    without templates: bad parameters come from the manifest, so retrying cannot
    fix them. The message names each field and value (``shell: with.stdin:
    expected str, got {"a":1}``); the kind is ``bad_params``.
    """
    try:
        return action.convert(params)
    except ParamsError as e:
        raise TerminalStepError(str(e), kind="bad_params") from e


def with_idempotency_key(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """``headers`` plus `IDEMPOTENCY_HEADER`, unless the step already sets it (any case)."""
    out = dict(headers)
    if not any(k.lower() == IDEMPOTENCY_HEADER.lower() for k in out):
        out[IDEMPOTENCY_HEADER] = key
    return out
