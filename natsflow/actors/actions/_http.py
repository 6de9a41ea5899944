"""The ``http`` action: one HTTP request, the response as output."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec

from natsflow.actors.actions._context import ActionContext, convert_params, with_idempotency_key
from natsflow.events.errors import RetryableStepError, TerminalStepError
from natsflow.manifests.actions import HTTP

# Statuses worth retrying even though they are 4xx: the server asks to come back.
_RETRYABLE_4XX = frozenset({408, 429})
# How much of an unexpected response's body goes into the error message.
_ERROR_BODY_LIMIT = 500


async def http(ctx: ActionContext, params: dict[str, Any]) -> Any:
    """Send one HTTP request; output ``{"status", "headers", "body"}``.

    Params (`HttpParams`): ``url``, ``method`` (any case; default GET, or POST when
    a body is given),
    ``headers``, ``json`` (any JSON, sent as ``application/json``) or ``body``
    (text), ``expect_status`` (list of accepted statuses; default any 2xx),
    ``timeout`` (seconds for the whole request, default 300; the runtime's step
    timeout applies as well). The body of the output is parsed JSON when the
    response says it is JSON, else text. Header ``Natsflow-Idempotency-Key`` carries
    the attempt's key unless ``headers`` already sets it.

    An unexpected status is a `RetryableStepError` for 5xx, 408 and 429 (with
    ``retry_after`` from a ``Retry-After`` header), else a `TerminalStepError`;
    both have kind ``http_status``. Connection failures are retryable.
    """
    p = convert_params(HTTP, params)
    has_body = p.json is not msgspec.UNSET or p.body is not None
    method = p.method or ("POST" if has_body else "GET")
    headers = with_idempotency_key(p.headers, ctx.idempotency_key)
    data: bytes | None = None
    if p.json is not msgspec.UNSET:
        data = msgspec.json.encode(p.json)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif p.body is not None:
        data = p.body.encode()

    where = f"http: {method} {p.url}"
    try:
        # A session per call: nothing to close on the registry, and a step's
        # connection count stays bounded by the worker's concurrency anyway.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=p.timeout)) as session,
            session.request(method, p.url, headers=headers, data=data) as resp,
        ):
            body = await _read_body(resp)
            status = resp.status
            resp_headers = _headers(resp)
            retry_after = _retry_after(resp.headers.get("Retry-After"))
    except aiohttp.InvalidURL as e:
        raise TerminalStepError(f"{where}: invalid url", kind="bad_params") from e
    except TimeoutError as e:
        # aiohttp's own timeout; the runtime's timeout arrives as a cancellation.
        raise RetryableStepError(f"{where}: timed out after {p.timeout}s", kind="timeout") from e
    except aiohttp.ClientConnectionError as e:
        raise RetryableStepError(f"{where}: {type(e).__name__}: {e}", kind="connection") from e
    except aiohttp.ClientError as e:
        raise RetryableStepError(f"{where}: {type(e).__name__}: {e}", kind="http_error") from e

    expected = 200 <= status < 300 if p.expect_status is None else status in p.expect_status
    if not expected:
        message = f"{where}: status {status}: {_snippet(body)}"
        if status >= 500 or status in _RETRYABLE_4XX:
            raise RetryableStepError(
                message,
                kind="http_status",
                retry_after=retry_after,
            )
        raise TerminalStepError(message, kind="http_status")
    return {"status": status, "headers": resp_headers, "body": body}


async def _read_body(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    ctype = resp.content_type
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            pass  # a server that lies about its body: keep the text
    try:
        return raw.decode(resp.get_encoding(), errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode(errors="replace")


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    # Repeated headers are joined as RFC 9110 allows, rather than last-one-wins.
    out: dict[str, str] = {}
    for key, value in resp.headers.items():
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(body: Any) -> str:
    text = body if isinstance(body, str) else msgspec.json.encode(body).decode()
    return text[:_ERROR_BODY_LIMIT]
