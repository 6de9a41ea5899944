"""The HTTP sidecar: health, readiness, Prometheus metrics and a small JSON API.

Routes (JSON bodies and answers; errors are ``{"error": message}``)::

    GET  /healthz                              200 "ok" while the process runs
    GET  /readyz                               200 {"ready": true} | 503 {"ready": false, "reason": ...}
    GET  /metrics                              Prometheus text format 0.0.4
    POST /v1/workflows/{name}/executions       {"input": ..., "idempotency_key": ...}
                                               -> 201 (created) | 200 (idempotent replay)
    GET  /v1/executions?status=&workflow=&limit=
                                               -> {"executions": [...]}
    GET  /v1/executions/{id}
    POST /v1/executions/{id}/signals/{name}    body = the signal's data (any JSON)
    POST /v1/executions/{id}/cancel            {"reason": ...}

``InputError`` answers 400, ``NotFound`` 404, any other ``NatsflowError`` 409.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import orjson
from aiohttp import web
from anyio.abc import TaskStatus

from natsflow.actors.metrics import CONTENT_TYPE, Metrics
from natsflow.events.errors import InputError, NatsflowError, NotFound

__all__ = ["DEFAULT_LIST_LIMIT", "MAX_LIST_LIMIT", "ExecutionApi", "make_app", "serve_http"]

log = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 100
"""``GET /v1/executions`` returns at most this many executions unless ``limit`` says."""
MAX_LIST_LIMIT = 1000
"""The largest ``limit`` accepted by ``GET /v1/executions``."""

_MAX_BODY = 8 * 1024 * 1024  # the embedded server's max_payload
_CANCEL_REASON = "cancelled via HTTP API"


class ExecutionApi(Protocol):
    """What the JSON API delegates to; the service's admin API implements it."""

    async def start(self, workflow: str, input: Any, idempotency_key: str | None) -> dict[str, Any]:
        """Start (or find, by idempotency key) an execution.

        Returns ``{"execution_id", "workflow", "version", "created"}``.
        """
        ...

    async def show(self, execution_id: str) -> dict[str, Any]:
        """Return one execution's status, steps and resume point; NotFound if unknown."""
        ...

    async def list(
        self, status: str | None, workflow: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` executions, newest first, optionally filtered."""
        ...

    async def signal(self, execution_id: str, name: str, data: Any) -> dict[str, Any]:
        """Deliver signal ``name`` with ``data`` to an execution."""
        ...

    async def cancel(self, execution_id: str, reason: str) -> dict[str, Any]:
        """Ask an execution to cancel."""
        ...


class _StartBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    input: Any = None
    idempotency_key: str | None = None


class _CancelBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = _CANCEL_REASON


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _decode(request: web.Request, type_: type[_T], default: _T) -> _T:
    """Decode the body as ``type_``; an empty body means ``default``."""
    body = await request.read()
    if not body.strip():
        return default
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise InputError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"invalid JSON body: {exc}") from None


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InputError as exc:
        return _error(400, str(exc))
    except NotFound as exc:
        return _error(404, str(exc))
    except NatsflowError as exc:
        return _error(409, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return _error(500, "internal error (see the service log)")


def _query_limit(request: web.Request) -> int:
    text = request.query.get("limit", "")
    if not text:
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InputError(f"limit: expected an integer from 1 to {MAX_LIST_LIMIT}, got {text!r}")
    return limit


class _Routes:
    """Request handlers bound to one process's API, metrics and readiness check."""

    def __init__(
        self, api: ExecutionApi | None, metrics: Metrics, ready: Callable[[], bool]
    ) -> None:
        self._api_or_none = api
        self.metrics = metrics
        self.ready = ready

    @property
    def api(self) -> ExecutionApi:
        if self._api_or_none is None:
            raise web.HTTPServiceUnavailable(reason="this process serves no execution API")
        return self._api_or_none

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            is_ready = self.ready()
            reason = "not ready: starting, stopping, or not connected to NATS"
        except Exception as exc:
            is_ready, reason = False, f"readiness check failed: {exc}"
        if is_ready:
            return _json({"ready": True})
        return _json({"ready": False, "reason": reason}, 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def start(self, request: web.Request) -> web.Response:
        body = await _decode(request, _StartBody, _StartBody())
        workflow = request.match_info["name"]
        result = await self.api.start(workflow, body.input, body.idempotency_key)
        return _json(result, 201 if result.get("created", True) else 200)

    async def list(self, request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        workflow = request.query.get("workflow") or None
        limit = _query_limit(request)
        return _json({"executions": await self.api.list(status, workflow, limit)})

    async def show(self, request: web.Request) -> web.Response:
        return _json(await self.api.show(request.match_info["id"]))

    async def signal(self, request: web.Request) -> web.Response:
        data: Any = await _decode(request, object, None)
        execution_id, name = request.match_info["id"], request.match_info["name"]
        return _json(await self.api.signal(execution_id, name, data))

    async def cancel(self, request: web.Request) -> web.Response:
        body = await _decode(request, _CancelBody, _CancelBody())
        return _json(await self.api.cancel(request.match_info["id"], body.reason))


def make_app(
    api: ExecutionApi | None, metrics: Metrics, ready: Callable[[], bool]
) -> web.Application:
    """Build the aiohttp application; ``api=None`` serves health and metrics only."""
    routes = _Routes(api, metrics, ready)
    app = web.Application(middlewares=[_errors], client_max_size=_MAX_BODY)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics_text)
    app.router.add_post("/v1/workflows/{name}/executions", routes.start)
    app.router.add_get("/v1/executions", routes.list)
    app.router.add_get("/v1/executions/{id}", routes.show)
    app.router.add_post("/v1/executions/{id}/signals/{name}", routes.signal)
    app.router.add_post("/v1/executions/{id}/cancel", routes.cancel)
    return app


async def serve_http(
    api: ExecutionApi | None,
    metrics: Metrics,
    ready: Callable[[], bool],
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on ``host:port`` until cancelled; ``port=0`` picks a free port.

    Use ``port = await tg.start(serve_http, api, metrics, ready, host, port)``:
    it reports the bound port once the socket listens.
    """
    runner = web.AppRunner(make_app(api, metrics, ready), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        log.info("HTTP sidecar listening on http://%s:%d", host, bound)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
