"""The ``nats.request`` action: a step served by any NATS responder."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors

from natsflow.actors.actions._context import ActionContext, convert_params, with_idempotency_key
from natsflow.events.errors import RetryableStepError, StepError, TerminalStepError
from natsflow.manifests.actions import NATS_REQUEST

#: Reply header: the responder failed with this message.
ERROR_HEADER = "Natsflow-Error"
#: Reply header: ``"false"`` makes the failure terminal; anything else, or absent, retryable.
ERROR_RETRYABLE_HEADER = "Natsflow-Error-Retryable"
#: Reply header: the error's ``kind`` (default ``"remote_error"``), for ``retry.on`` filters.
ERROR_KIND_HEADER = "Natsflow-Error-Kind"
# What a nats.py / nats.go micro service replies with on error; honoured so that an
# existing micro service can serve a step unchanged.
_SERVICE_ERROR = "Nats-Service-Error"
_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"


async def nats_request(ctx: ActionContext, params: dict[str, Any]) -> Any:
    """Send a request on ``subject`` with ``ctx.nc`` and return the parsed reply.

    Params (`NatsRequestParams`): ``subject``, ``data`` (a string is sent as UTF-8,
    anything else as JSON; absent sends an empty payload), ``headers``, ``timeout``
    (seconds > 0, default 30).
    The attempt's key travels in header ``Natsflow-Idempotency-Key`` unless
    ``headers`` sets it.

    The output is the reply parsed as JSON, ``None`` for an empty reply, else
    ``{"data": text}``. A reply with header `ERROR_HEADER` is a failure: terminal if
    `ERROR_RETRYABLE_HEADER` is ``false``, else retryable, with kind from
    `ERROR_KIND_HEADER`. A micro-service error reply (``Nats-Service-Error``) is
    terminal for a 4xx code other than 408/429, else retryable. No responders and
    timeouts are retryable (kinds ``no_responders``, ``timeout``).
    """
    p = convert_params(NATS_REQUEST, params)
    if ctx.nc is None:
        raise TerminalStepError(
            f"nats.request: step {ctx.step} of {ctx.execution_id}: the worker has no NATS client",
            kind="no_connection",
        )
    if p.data is msgspec.UNSET:
        payload = b""
    elif isinstance(p.data, str):
        payload = p.data.encode()
    else:
        payload = msgspec.json.encode(p.data)
    headers = with_idempotency_key(p.headers, ctx.idempotency_key)

    where = f"nats.request {p.subject}"
    try:
        msg = await ctx.nc.request(p.subject, payload, timeout=p.timeout, headers=headers)
    except nats.errors.NoRespondersError as e:
        raise RetryableStepError(f"{where}: no responders", kind="no_responders") from e
    except nats.errors.TimeoutError as e:
        raise RetryableStepError(f"{where}: no reply within {p.timeout}s", kind="timeout") from e
    except (nats.errors.BadSubjectError, nats.errors.MaxPayloadError) as e:
        raise TerminalStepError(f"{where}: {type(e).__name__}: {e}", kind="bad_params") from e
    except nats.errors.Error as e:
        raise RetryableStepError(f"{where}: {type(e).__name__}: {e}", kind="connection") from e

    if error := _reply_error(where, msg.headers or {}):
        raise error
    if not msg.data:
        return None
    try:
        return msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        return {"data": msg.data.decode(errors="replace")}


def _reply_error(where: str, headers: dict[str, str]) -> StepError | None:
    # NATS headers are case-sensitive on the wire, but a responder written by hand
    # in another language may well send "natsflow-error": accept any case.
    lower = {k.lower(): v for k, v in headers.items()}
    if (message := lower.get(ERROR_HEADER.lower())) is not None:
        kind = lower.get(ERROR_KIND_HEADER.lower()) or "remote_error"
        text = f"{where}: responder error: {message}"
        if lower.get(ERROR_RETRYABLE_HEADER.lower(), "").strip().lower() == "false":
            return TerminalStepError(text, kind=kind)
        return RetryableStepError(text, kind=kind)
    if (message := lower.get(_SERVICE_ERROR.lower())) is not None:
        code = lower.get(_SERVICE_ERROR_CODE.lower(), "").strip()
        text = f"{where}: service error {code}: {message}"
        if code.isdigit() and 400 <= int(code) < 500 and int(code) not in (408, 429):
            return TerminalStepError(text, kind="service_error")
        return RetryableStepError(text, kind="service_error")
    return None
