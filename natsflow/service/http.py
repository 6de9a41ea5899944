"""The HTTP sidecar: health, readiness, Prometheus metrics and a small JSON API.

Routes (JSON bodies and answers; errors are ``{"error": message}``, plus
``"problems": [...]`` when a start's input breaks the workflow's input schema)::

    GET  /healthz                              200 "ok" while the process runs
    GET  /readyz                               200 {"ready": true} | 503 {"ready": false, "reason": ...}
    GET  /metrics                              Prometheus text format 0.0.4
    POST /v1/workflows/{name}/executions       {"input": ..., "idempotency_key": ...}
                                               -> 201 (created) | 200 (idempotent replay)
    GET  /v1/executions?status=&workflow=&since=&until=&error=&parent=&limit=&after=&count=
                                               -> {"executions": [...], "next": cursor}
                                               (``count``: {"executions": [], "count": n})
    GET  /v1/stats?workflow=&since=&until=     -> {"total": n, "rows": [{workflow, status, count}]}
    GET  /v1/executions/{id}
    POST /v1/executions/{id}/signals/{name}    body = the signal's data (any JSON); ?id=K
                                               sends it once however often it is posted
    POST /v1/executions/{id}/cancel            {"reason": ...}
    POST /v1/executions/{id}/resume            {"from_step": ...} (optional)
    POST /v1/executions/{id}/pause
    POST /v1/executions/{id}/unpause
    GET  /v1/triggers                          -> {"triggers": [...]}
    GET  /v1/dlq?reason=&after=&limit=         -> {"total": n, "dead_letters": [...]}
    GET  /v1/dlq/{id}                          one dead letter: headers, payload
    POST /v1/dlq/{id}/redrive                  {"input": ...} (optional: replaces the payload)
    POST /v1/dlq/redrive                       {"all": true, "reason": ...}
    DELETE /v1/dlq/{id}
    POST /v1/dlq/purge                         {"all": true} | {"reason": ...}

Each ``/v1`` route becomes a request of ``service.protocol`` (path, query and
body fields together, validated by the request struct) carried out by the same
handler as the NATS API; errors map to status codes with the same
``service.outcomes.outcome``: 400, 404, 409, 503 (NATS unavailable), 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from aiohttp import web
from anyio.abc import TaskStatus

from natsflow.actors.metrics import CONTENT_TYPE, Metrics
from natsflow.events.errors import InputError
from natsflow.events.views import Started
from natsflow.service.outcomes import outcome
from natsflow.service.protocol import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    AdminRequest,
    CancelRequest,
    DlqListRequest,
    DlqPurgeRequest,
    DlqRedriveRequest,
    DlqShowRequest,
    Handler,
    ListRequest,
    PauseRequest,
    ResumeRequest,
    ShowRequest,
    SignalRequest,
    StartRequest,
    StatsRequest,
    TriggersRequest,
    UnpauseRequest,
    request_from,
)

__all__ = ["make_app", "serve_http"]

log = logging.getLogger(__name__)

_MAX_BODY = 8 * 1024 * 1024  # the embedded server's max_payload
_CANCEL_REASON = "cancelled via HTTP API"

_Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
_R = TypeVar("_R", bound=AdminRequest)
_encoder = msgspec.json.Encoder()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, message: str, problems: tuple[str, ...] = ()) -> web.Response:
    return _json(
        {"error": message, "problems": problems} if problems else {"error": message}, status
    )


async def _body(request: web.Request, type_: Any = Any, empty: Any = None) -> Any:
    """The JSON body as ``type_``; an empty body is ``empty``."""
    body = await request.read()
    if not body.strip():
        return empty
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise InputError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"invalid JSON body: {exc}") from None


async def _request(
    request: web.Request, type_: type[_R], defaults: dict[str, Any], **route: Any
) -> _R:
    """``type_`` from the JSON object body over ``defaults``, plus the fields the URL gives."""
    body: dict[str, Any] = await _body(request, dict[str, Any], {})
    given = sorted(set(body) & set(route))
    if given:
        raise InputError(f"{given[0]}: unknown field (the URL gives it)")
    return request_from(type_, {**defaults, **body, **route})


@web.middleware
async def _errors(request: web.Request, handler: _Route) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:
        result = outcome(exc)
        response = _error(result.status, result.message, result.problems)
        if result.retryable:
            response.headers["Retry-After"] = "1"
        return response


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
    """Request handlers bound to one process's admin handler, metrics and readiness check."""

    def __init__(
        self, handle: Handler | None, metrics: Metrics, not_ready: Callable[[], str | None]
    ) -> None:
        self._handle = handle
        self.metrics = metrics
        self.not_ready = not_ready

    async def _call(self, request: AdminRequest) -> Any:
        if self._handle is None:
            raise web.HTTPServiceUnavailable(reason="this process serves no execution API")
        return await self._handle(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            reason = self.not_ready()
        except Exception as exc:
            reason = f"readiness check failed: {exc}"
        if reason is None:
            return _json({"ready": True})
        return _json({"ready": False, "reason": reason}, 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        await self.metrics.refresh()  # gauges read at scrape time: custom actions' queues
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def start(self, request: web.Request) -> web.Response:
        workflow = request.match_info["name"]
        reply = await self._call(await _request(request, StartRequest, {}, workflow=workflow))
        return _json(reply, 200 if isinstance(reply, Started) and not reply.created else 201)

    async def list(self, request: web.Request) -> web.Response:
        """``ls``: every query parameter is a field of ``ListRequest`` (an unknown one is
        refused naming it); the answer is the page: ``executions``, ``next``, ``count``."""
        fields: dict[str, Any] = {k: v or None for k, v in request.query.items()}
        fields["limit"] = _query_limit(request)
        if "count" in fields:
            fields["count"] = _query_bool(request, "count")
        return _json(await self._call(request_from(ListRequest, fields)))

    async def stats(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {k: v or None for k, v in request.query.items()}
        return _json(await self._call(request_from(StatsRequest, fields)))

    async def show(self, request: web.Request) -> web.Response:
        fields = {"execution_id": request.match_info["id"]}
        return _json(await self._call(request_from(ShowRequest, fields)))

    async def signal(self, request: web.Request) -> web.Response:
        fields = {
            "execution_id": request.match_info["id"],
            "name": request.match_info["name"],
            "data": await _body(request),
            "id": request.query.get("id") or None,
        }
        return _json(await self._call(request_from(SignalRequest, fields)))

    async def cancel(self, request: web.Request) -> web.Response:
        execution_id = request.match_info["id"]
        defaults = {"reason": _CANCEL_REASON}
        cancel = await _request(request, CancelRequest, defaults, execution_id=execution_id)
        return _json(await self._call(cancel))

    async def resume(self, request: web.Request) -> web.Response:
        execution_id = request.match_info["id"]
        resume = await _request(request, ResumeRequest, {}, execution_id=execution_id)
        return _json(await self._call(resume))

    async def pause(self, request: web.Request) -> web.Response:
        execution_id = request.match_info["id"]
        pause = await _request(request, PauseRequest, {}, execution_id=execution_id)
        return _json(await self._call(pause))

    async def unpause(self, request: web.Request) -> web.Response:
        execution_id = request.match_info["id"]
        unpause = await _request(request, UnpauseRequest, {}, execution_id=execution_id)
        return _json(await self._call(unpause))

    async def triggers(self, request: web.Request) -> web.Response:
        return _json(await self._call(TriggersRequest()))

    async def dlq_list(self, request: web.Request) -> web.Response:
        fields = {
            "reason": request.query.get("reason") or None,
            "after": _query_int(request, "after", 0),
            "limit": _query_limit(request),
        }
        return _json(await self._call(request_from(DlqListRequest, fields)))

    async def dlq_show(self, request: web.Request) -> web.Response:
        fields = {"id": _path_id(request)}
        return _json(await self._call(request_from(DlqShowRequest, fields)))

    async def dlq_redrive_one(self, request: web.Request) -> web.Response:
        redrive = await _request(request, DlqRedriveRequest, {}, id=_path_id(request))
        return _json(await self._call(redrive))

    async def dlq_redrive_all(self, request: web.Request) -> web.Response:
        return _json(await self._call(await _request(request, DlqRedriveRequest, {})))

    async def dlq_delete(self, request: web.Request) -> web.Response:
        fields = {"id": _path_id(request)}
        return _json(await self._call(request_from(DlqPurgeRequest, fields)))

    async def dlq_purge(self, request: web.Request) -> web.Response:
        return _json(await self._call(await _request(request, DlqPurgeRequest, {})))


def _path_id(request: web.Request) -> int:
    """A dead letter's id from the path: its stream sequence, a positive integer."""
    text = request.match_info["id"]
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"id: expected a dead letter's id (a positive integer), got {text!r}")
    return int(text)


def _query_bool(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "").strip().lower()
    if text in ("", "1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise InputError(f"{name}: expected true or false, got {text!r}")


def _query_int(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise InputError(f"{name}: expected a non-negative integer, got {text!r}")
    return int(text)


def make_app(
    handle: Handler | None, metrics: Metrics, not_ready: Callable[[], str | None]
) -> web.Application:
    """Build the aiohttp application; ``handle=None`` serves health and metrics only.

    ``not_ready()`` says why the process is not ready (``/readyz`` answers 503 with
    it), or None when it is.
    """
    routes = _Routes(handle, metrics, not_ready)
    app = web.Application(middlewares=[_errors], client_max_size=_MAX_BODY)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics_text)
    app.router.add_post("/v1/workflows/{name}/executions", routes.start)
    app.router.add_get("/v1/executions", routes.list)
    app.router.add_get("/v1/executions/{id}", routes.show)
    app.router.add_get("/v1/stats", routes.stats)
    app.router.add_post("/v1/executions/{id}/signals/{name}", routes.signal)
    app.router.add_post("/v1/executions/{id}/cancel", routes.cancel)
    app.router.add_post("/v1/executions/{id}/resume", routes.resume)
    app.router.add_post("/v1/executions/{id}/pause", routes.pause)
    app.router.add_post("/v1/executions/{id}/unpause", routes.unpause)
    app.router.add_get("/v1/triggers", routes.triggers)
    app.router.add_get("/v1/dlq", routes.dlq_list)
    app.router.add_post("/v1/dlq/redrive", routes.dlq_redrive_all)
    app.router.add_post("/v1/dlq/purge", routes.dlq_purge)
    app.router.add_get("/v1/dlq/{id}", routes.dlq_show)
    app.router.add_post("/v1/dlq/{id}/redrive", routes.dlq_redrive_one)
    app.router.add_delete("/v1/dlq/{id}", routes.dlq_delete)
    return app


async def serve_http(
    handle: Handler | None,
    metrics: Metrics,
    not_ready: Callable[[], str | None],
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on ``host:port`` until cancelled; ``port=0`` picks a free port.

    Use ``port = await tg.start(serve_http, handle, metrics, not_ready, host, port)``:
    it reports the bound port once the socket listens.
    """
    runner = web.AppRunner(make_app(handle, metrics, not_ready), access_log=None)
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
