"""NATS's errors, mapped once: what the adapter raises instead of them.

nats-py signals "the server cannot be reached or did not answer" with a dozen
exception classes (a closed or draining connection, a full reconnect buffer,
no responders, a request timeout, a JetStream 503). Inside the adapter each
NATS call runs under ``unavailable_as(what)``, which turns all of them into
``natsflow.events.errors.Unavailable`` naming what was attempted, so nothing
above the adapter catches a NATS exception. The other mappings live where
they happen: 10071 ``wrong last sequence`` on an append becomes
``ConcurrencyConflict`` (``store``); a KV key that exists already stays inside
the adapter (``definitions``, ``idempotency``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from natsflow.events.errors import Unavailable

# Not connected (closed, draining, reconnecting with a full buffer, no server),
# nobody answered (no responders, JetStream 503), or no answer in time. A
# request's nats.errors.TimeoutError is a TimeoutError, as is a missing ack.
UNAVAILABLE: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
)


@contextmanager
def unavailable_as(what: str) -> Iterator[None]:
    """Raise ``Unavailable("<what>: ...")`` for any NATS outage raised inside the block."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise unavailable(what, exc) from exc


def unavailable(what: str, exc: BaseException | str) -> Unavailable:
    """The ``Unavailable`` to raise for ``exc`` (an exception, or the reason in words)."""
    reason = exc if isinstance(exc, str) else describe(exc)
    return Unavailable(f"{what}: NATS unavailable ({reason})")


def describe(exc: BaseException) -> str:
    """A NATS error in a few words: nats-py's own text, else what kind of failure it was."""
    if str(exc):
        return str(exc)
    return "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
