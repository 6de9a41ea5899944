"""The admin API as a NATS micro service (``$SRV.PING``/``INFO``/``STATS`` work).

Endpoints are ``natsflow.api.<verb>``; requests and replies are JSON. An error
reply carries the ``Nats-Service-Error-Code`` (400 bad input, 404 not found,
409 refused, 500 internal) and ``Nats-Service-Error`` headers, and a JSON body
``{"error": ..., "problems": [...]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from natsflow.actors.jetstream.topology import API_PREFIX
from natsflow.events.errors import InputError, ManifestError, NatsflowError, NotFound
from natsflow.service.api import Admin

log = logging.getLogger(__name__)

Endpoint = Callable[[dict[str, Any]], Awaitable[Any]]
VERSION = "0.1.0"


def _str(body: dict[str, Any], field: str, required: bool = True) -> Any:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(
            f"{field}: expected a non-empty string, got {orjson.dumps(value).decode()}"
        )
    return value


def endpoints(admin: Admin) -> dict[str, Endpoint]:
    async def deploy(b: dict[str, Any]) -> Any:
        return await admin.deploy(
            _str(b, "manifest"), _str(b, "format"), b.get("source") or "<api>"
        )

    async def start(b: dict[str, Any]) -> Any:
        return await admin.start(
            _str(b, "workflow"), b.get("input"), _str(b, "idempotency_key", False)
        )

    async def ls(b: dict[str, Any]) -> Any:
        limit = b.get("limit", 100)
        if not isinstance(limit, int) or limit < 1:
            raise InputError(f"limit: expected an integer >= 1, got {limit!r}")
        return await admin.list(b.get("status"), b.get("workflow"), limit)

    async def show(b: dict[str, Any]) -> Any:
        return await admin.show(_str(b, "execution_id"))

    async def history(b: dict[str, Any]) -> Any:
        return await admin.history(_str(b, "execution_id"), archive=bool(b.get("all")))

    async def cancel(b: dict[str, Any]) -> Any:
        return await admin.cancel(
            _str(b, "execution_id"), b.get("reason") or "cancelled by operator"
        )

    async def signal(b: dict[str, Any]) -> Any:
        return await admin.signal(_str(b, "execution_id"), _str(b, "name"), b.get("data"))

    async def workflows(b: dict[str, Any]) -> Any:
        return await admin.workflows()

    return {
        "deploy": deploy,
        "start": start,
        "ls": ls,
        "show": show,
        "history": history,
        "cancel": cancel,
        "signal": signal,
        "workflows": workflows,
    }


def _handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        try:
            body = orjson.loads(request.data) if request.data else {}
            if not isinstance(body, dict):
                raise InputError("request body: expected a JSON object")
            result = await endpoint(body)
        except orjson.JSONDecodeError as exc:
            await _error(request, "400", f"request body: invalid JSON: {exc}")
        except ManifestError as exc:
            await _error(request, "400", str(exc), exc.problems)
        except InputError as exc:
            await _error(request, "400", str(exc))
        except NotFound as exc:
            await _error(request, "404", str(exc))
        except NatsflowError as exc:
            await _error(request, "409", str(exc))
        except Exception as exc:
            log.exception("admin API")
            await _error(request, "500", f"{type(exc).__name__}: {exc}")
        else:
            await request.respond(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))

    return handle


async def _error(
    request: Request, code: str, message: str, problems: list[str] | None = None
) -> None:
    body = orjson.dumps({"error": message, "problems": problems or []})
    await request.respond_error(code, message.splitlines()[0][:500], data=body)


def _concurrently(
    handler: Callable[[Request], Awaitable[None]], tg: TaskGroup, limiter: anyio.CapacityLimiter
) -> Callable[[Request], Awaitable[None]]:
    """nats-py calls a subscription's handler one request at a time; answer many at once."""

    async def limited(request: Request) -> None:
        async with limiter:
            await handler(request)

    async def spawn(request: Request) -> None:
        tg.start_soon(limited, request)

    return spawn


async def start_admin_service(
    nc: Client, admin: Admin, tg: TaskGroup, *, concurrency: int = 256
) -> Service:
    """Register ``natsflow.api.*`` (queue group: any instance may answer).

    Requests are handled in ``tg``, at most ``concurrency`` at a time.
    """
    service = await add_service(
        nc, name="natsflow", version=VERSION, description="natsflow admin API"
    )
    group = service.add_group(name=API_PREFIX)
    limiter = anyio.CapacityLimiter(concurrency)
    for name, endpoint in endpoints(admin).items():
        handler = _concurrently(_handler(endpoint), tg, limiter)
        await group.add_endpoint(name=name, handler=handler)
    return service
