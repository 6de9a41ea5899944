"""Errors to outcomes and back: the one mapping the NATS API, HTTP and the client share.

=====  ===========================================================  ==================
code   raised by the handler                                        raised by a client
=====  ===========================================================  ==================
400    ``InputError``, ``ManifestError`` (invalid input: names the  ``InputError``
       field; a manifest's ``problems`` list every problem),         (``ManifestError``
       ``InvalidInput`` (an input that breaks the workflow's         for a deploy's
       ``input`` schema: ``problems`` lists every problem)           problems, else
                                                                     ``InvalidInput``)
404    ``NotFound`` (no such workflow, version or execution)        ``NotFound``
409    ``Conflict``, ``ConcurrencyConflict`` (the request           ``Conflict``
       contradicts the state: cancel a finished execution, ...)
503    ``Unavailable`` (NATS down or not answering: retry later)    ``Unavailable``
500    ``Undecodable`` (stored data that cannot be decoded: its     ``InternalError``
       message names the subject and sequence); anything else
       (a bug: logged with its traceback)
=====  ===========================================================  ==================

Request bodies are decoded by ``protocol.decode_request`` / ``request_from``,
which raise ``InputError`` naming the field; a msgspec error that reaches this
mapping comes from decoding stored data, so it is a 500, not the caller's fault.
"""

from __future__ import annotations

import logging

import msgspec

from natsflow.events.errors import (
    ConcurrencyConflict,
    Conflict,
    InputError,
    InternalError,
    InvalidInput,
    ManifestError,
    NatsflowError,
    NotFound,
    Unavailable,
    Undecodable,
)

log = logging.getLogger("natsflow.api")


class Outcome(msgspec.Struct, frozen=True):
    """How a failed request is answered: a status code, a message, and a manifest's problems."""

    status: int
    message: str
    problems: tuple[str, ...] = ()

    @property
    def retryable(self) -> bool:
        return self.status == 503


def outcome(exc: Exception) -> Outcome:
    """The answer to a request that raised ``exc``; a 500 is logged with its traceback."""
    match exc:
        case ManifestError() | InvalidInput():
            return Outcome(400, str(exc), tuple(exc.problems))
        case InputError():
            return Outcome(400, str(exc))
        case NotFound():
            return Outcome(404, str(exc))
        case Conflict() | ConcurrencyConflict():
            return Outcome(409, str(exc))
        case Unavailable():
            return Outcome(503, str(exc))
        case Undecodable():
            log.error("admin request failed: %s", exc)
            return Outcome(500, str(exc))
        case _:
            log.error("admin request failed", exc_info=exc)
            return Outcome(500, f"internal error ({type(exc).__name__}; see the service log)")


_BY_STATUS: dict[int, type[NatsflowError]] = {
    400: InputError,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}


def error_of(
    status: int, message: str, problems: tuple[str, ...] = (), source: str | None = None
) -> NatsflowError:
    """The exception a client raises for an error reply (the inverse of ``outcome``).

    A 400 listing problems is a manifest's (``ManifestError(source, problems)``)
    when ``source`` names the deployed manifest, else an input's (``InvalidInput``).
    """
    if status == 400 and problems:
        if source is None:
            return InvalidInput(message.split(":\n", 1)[0], list(problems))
        return ManifestError(source or "<api>", list(problems))
    return _BY_STATUS.get(status, InternalError)(message)
