"""The HTTP sidecar over a real socket: health, readiness, metrics and the JSON API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp import web
from nats.aio.client import Client as Nats

from natsflow.actors.jetstream.topology import (
    ACTORS_CONSUMER,
    INBOX_STREAM,
    TASKS_STREAM,
    WORKERS_CONSUMER,
)
from natsflow.actors.metrics import Metrics
from natsflow.events.errors import ConcurrencyConflict, InputError, NotFound
from natsflow.events.views import ExecutionSummary, ExecutionView, ResumePoint, Started
from natsflow.service.embedded import EmbeddedServer, free_port
from natsflow.service.http import make_app, serve_http
from natsflow.service.protocol import (
    AdminRequest,
    CancelRequest,
    CancelRequested,
    ExecutionPage,
    Handler,
    ListRequest,
    Reply,
    ShowRequest,
    Signalled,
    SignalRequest,
    StartRequest,
)
from tests.eventually import eventually
from tests.integration.harness import running


def _view(execution_id: str) -> ExecutionView:
    return ExecutionView(
        execution_id=execution_id,
        workflow="orders",
        version="v1",
        status="running",
        started_at=1.0,
        finished_at=None,
        input=None,
        output=None,
        error=None,
        failed_step=None,
        steps_done=0,
        steps_total=1,
        current=(),
        resume_point=ResumePoint(events=1, stream_seq=1),
        steps={},
    )


@dataclass
class FakeHandler:
    """An in-memory admin handler recording every request it carries out."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)

    async def __call__(self, request: AdminRequest) -> Reply:
        match request:
            case StartRequest(workflow=workflow, input=input, idempotency_key=key):
                return self.start(workflow, input, key)
            case ShowRequest(execution_id=execution_id):
                self.calls.append(("show", execution_id))
                if execution_id == "nope":
                    raise NotFound(f"execution {execution_id} not found")
                if execution_id == "boom":
                    raise RuntimeError("bug")
                return _view(execution_id)
            case ListRequest(status=status, workflow=workflow, limit=limit):
                self.calls.append(("list", status, workflow, limit))
                row = ExecutionSummary(
                    execution_id="ex-1", workflow="orders", version="v1", status=status or "running"
                )
                return ExecutionPage(executions=(row,))
            case SignalRequest(execution_id=execution_id, name=name, data=data, id=signal_id):
                self.calls.append(("signal", execution_id, name, data))
                return Signalled(execution_id=execution_id, signal=name, id=signal_id or "new")
            case CancelRequest(execution_id=execution_id, reason=reason):
                self.calls.append(("cancel", execution_id, reason))
                if execution_id == "done":
                    raise ConcurrencyConflict(execution_id, 7)
                return CancelRequested(execution_id=execution_id)
        raise AssertionError(f"HTTP sent {request}")

    def start(self, workflow: str, input: Any, key: str | None) -> Started:
        self.calls.append(("start", workflow, input, key))
        if workflow == "missing":
            raise NotFound(f"workflow {workflow!r} is not deployed")
        if workflow == "bad":
            raise InputError("input.count: expected an integer, got 'x'")
        created = key is None or key not in self.keys
        execution_id = f"ex-{len(self.calls)}"
        if key is not None:
            execution_id = self.keys.setdefault(key, execution_id)
        return Started(execution_id=execution_id, workflow=workflow, version="v1", created=created)


@dataclass
class Sidecar:
    base: str
    session: aiohttp.ClientSession
    api: FakeHandler
    metrics: Metrics
    readiness: list[bool]


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    """The app on a real socket (an AppRunner: a task group cannot span a fixture's yield)."""
    api = FakeHandler()
    typed: Handler = api  # FakeHandler is an admin handler
    metrics = Metrics()
    readiness = [False]
    runner = web.AppRunner(make_app(typed, metrics, lambda: None if readiness[0] else "starting"))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            yield Sidecar(f"http://127.0.0.1:{port}", session, api, metrics, readiness)
    finally:
        await runner.cleanup()


async def _get(s: Sidecar, path: str) -> tuple[int, Any]:
    async with s.session.get(s.base + path) as resp:
        return resp.status, await resp.json()


async def _post(s: Sidecar, path: str, body: bytes | None = None) -> tuple[int, Any]:
    async with s.session.post(s.base + path, data=body) as resp:
        return resp.status, await resp.json()


async def test_healthz(sidecar: Sidecar) -> None:
    async with sidecar.session.get(sidecar.base + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_readyz_turns_from_503_to_200(sidecar: Sidecar) -> None:
    status, body = await _get(sidecar, "/readyz")
    assert status == 503
    assert body == {"ready": False, "reason": "starting"}
    sidecar.readiness[0] = True
    assert await _get(sidecar, "/readyz") == (200, {"ready": True})


async def test_metrics_are_prometheus_text(sidecar: Sidecar) -> None:
    sidecar.metrics.executions_started.labels(workflow="orders").inc()
    async with sidecar.session.get(sidecar.base + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert 'natsflow_executions_started_total{workflow="orders"} 1.0' in text
    assert "# TYPE natsflow_active_actors gauge" in text


async def test_start_creates_then_replays_by_idempotency_key(sidecar: Sidecar) -> None:
    body = b'{"input": {"n": 1}, "idempotency_key": "k1"}'
    status, first = await _post(sidecar, "/v1/workflows/orders/executions", body)
    assert status == 201
    assert first["created"] is True
    assert first["workflow"] == "orders"
    status, again = await _post(sidecar, "/v1/workflows/orders/executions", body)
    assert status == 200
    assert again["created"] is False
    assert again["execution_id"] == first["execution_id"]
    assert sidecar.api.calls[0] == ("start", "orders", {"n": 1}, "k1")


async def test_start_with_an_empty_body(sidecar: Sidecar) -> None:
    status, _ = await _post(sidecar, "/v1/workflows/orders/executions")
    assert status == 201
    assert sidecar.api.calls == [("start", "orders", None, None)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "invalid JSON body"),
        (b'{"inptu": 1}', "inptu"),
        (b'{"idempotency_key": 5}', "idempotency_key"),
        (b"[1, 2]", "Expected `object`"),
    ],
)
async def test_start_rejects_bad_bodies(sidecar: Sidecar, body: bytes, fragment: str) -> None:
    status, answer = await _post(sidecar, "/v1/workflows/orders/executions", body)
    assert status == 400
    assert fragment in answer["error"]
    assert sidecar.api.calls == []


async def test_errors_map_to_status_codes(sidecar: Sidecar) -> None:
    status, body = await _post(sidecar, "/v1/workflows/missing/executions", b"{}")
    assert (status, body) == (404, {"error": "workflow 'missing' is not deployed"})
    status, body = await _post(sidecar, "/v1/workflows/bad/executions", b"{}")
    assert status == 400
    assert "input.count" in body["error"]
    status, body = await _get(sidecar, "/v1/executions/nope")
    assert status == 404
    status, body = await _post(sidecar, "/v1/executions/done/cancel", b"{}")
    assert status == 409
    assert "another decider" in body["error"]


async def test_unexpected_errors_answer_500_json(
    sidecar: Sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    status, body = await _get(sidecar, "/v1/executions/boom")
    assert status == 500
    assert "internal error" in body["error"]
    assert "bug" in caplog.text


async def test_unknown_route_answers_json_404(sidecar: Sidecar) -> None:
    status, body = await _get(sidecar, "/v1/nothing")
    assert status == 404
    assert "error" in body


async def test_show(sidecar: Sidecar) -> None:
    status, body = await _get(sidecar, "/v1/executions/ex-9")
    assert status == 200
    assert body == msgspec.json.decode(msgspec.json.encode(_view("ex-9")))
    assert body["resume_point"] == {"events": 1, "stream_seq": 1}


async def test_list_with_filters_and_limit(sidecar: Sidecar) -> None:
    status, body = await _get(sidecar, "/v1/executions?status=failed&workflow=orders&limit=5")
    assert status == 200
    assert body == {
        "executions": [
            {"execution_id": "ex-1", "workflow": "orders", "version": "v1", "status": "failed"}
        ]
    }
    await _get(sidecar, "/v1/executions")
    assert sidecar.api.calls == [("list", "failed", "orders", 5), ("list", None, None, 100)]


@pytest.mark.parametrize("limit", ["0", "lots", "5000"])
async def test_list_rejects_bad_limits(sidecar: Sidecar, limit: str) -> None:
    status, body = await _get(sidecar, f"/v1/executions?limit={limit}")
    assert status == 400
    assert body["error"].startswith("limit: expected an integer from 1 to 1000")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=weird", "status"),
        ("workflow=no.dots", "workflow"),
        ("since=yesterday", "since"),
        ("until=2024-13-45", "until"),
        ("after=not-a-cursor", "after"),
        ("count=maybe", "count"),
        ("colour=red", "colour"),
    ],
)
async def test_list_rejects_bad_filters_naming_the_field(
    sidecar: Sidecar, query: str, field: str
) -> None:
    status, body = await _get(sidecar, f"/v1/executions?{query}")
    assert status == 400
    assert body["error"].startswith(f"{field}: ")
    assert sidecar.api.calls == []


async def test_start_refuses_a_body_repeating_the_url(sidecar: Sidecar) -> None:
    status, body = await _post(sidecar, "/v1/workflows/orders/executions", b'{"workflow": "x"}')
    assert (status, body) == (400, {"error": "workflow: unknown field (the URL gives it)"})


async def test_signal_passes_any_json_as_data(sidecar: Sidecar) -> None:
    status, body = await _post(sidecar, "/v1/executions/ex-1/signals/approve", b'{"by": "ann"}')
    assert (status, body) == (200, {"execution_id": "ex-1", "signal": "approve", "id": "new"})
    status, body = await _post(sidecar, "/v1/executions/ex-1/signals/ping?id=k1")
    assert body["id"] == "k1"
    await _post(sidecar, "/v1/executions/ex-1/signals/count", b"3")
    assert sidecar.api.calls == [
        ("signal", "ex-1", "approve", {"by": "ann"}),
        ("signal", "ex-1", "ping", None),
        ("signal", "ex-1", "count", 3),
    ]
    status, body = await _post(sidecar, "/v1/executions/ex-1/signals/x", b"{oops")
    assert status == 400
    assert "invalid JSON body" in body["error"]


async def test_cancel_with_and_without_reason(sidecar: Sidecar) -> None:
    status, body = await _post(sidecar, "/v1/executions/ex-1/cancel", b'{"reason": "stop"}')
    assert (status, body) == (200, {"execution_id": "ex-1", "cancel_requested": True})
    await _post(sidecar, "/v1/executions/ex-2/cancel")
    assert sidecar.api.calls == [
        ("cancel", "ex-1", "stop"),
        ("cancel", "ex-2", "cancelled via HTTP API"),
    ]


async def test_serve_http_reports_its_port_and_stops_when_cancelled() -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, None, Metrics(), lambda: None, "127.0.0.1", 0)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/v1/executions") as resp:
                assert resp.status == 503  # no admin handler in this process
                assert "no execution API" in (await resp.json())["error"]
        tg.cancel_scope.cancel()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


@pytest.mark.parametrize(
    ("stream", "consumer", "named"),
    [
        (TASKS_STREAM, WORKERS_CONSUMER, "consumer natsflow-workers on NATSFLOW_TASKS"),
        (INBOX_STREAM, ACTORS_CONSUMER, "consumer natsflow-actors on NATSFLOW_INBOX"),
        (TASKS_STREAM, None, "stream NATSFLOW_TASKS"),
    ],
    ids=["workers-consumer", "actors-consumer", "tasks-stream"],
)
async def test_readyz_names_a_missing_stream_or_consumer_until_the_service_restores_it(
    nats_server: EmbeddedServer, nc: Nats, stream: str, consumer: str | None, named: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        await engine.deploy(EXAMPLES / "hello.yaml")

        async def readyz() -> tuple[int, Any]:
            async with http.get(f"{base}/readyz") as resp:
                return resp.status, await resp.json()

        assert await readyz() == (200, {"ready": True})
        js = nc.jetstream()
        if consumer is None:
            await js.delete_stream(stream)
        else:
            await js.delete_consumer(stream, consumer)

        async def not_ready() -> Any:
            status, body = await readyz()
            assert status == 503, body
            return body

        body = await eventually(not_ready, within=10, interval=0.02)
        assert named in body["reason"], body

        async def ready_again() -> None:
            assert await readyz() == (200, {"ready": True})

        await eventually(ready_again, within=10)
        if consumer is not None:
            await js.consumer_info(stream, consumer)  # re-created by the service
        # The pullers resume on the re-created consumer: new work runs to its end.
        execution = await engine.start("hello", {"name": "Bo"})
        shown = await engine.wait_done(execution, timeout=20)
    assert shown["status"] == "completed", shown
    assert shown["output"] == {"greeting": "Hello, Bo!"}
