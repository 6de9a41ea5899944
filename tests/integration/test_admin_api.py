"""The admin protocol over NATS and HTTP: typed requests, one error mapping, counted errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient

import natsflow
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import Engine, running

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


async def raw(nc: NatsClient, verb: str, body: dict[str, Any]) -> tuple[str | None, Any]:
    """Send a hand-written body to ``natsflow.api.<verb>``: (error code or None, JSON body)."""
    msg = await nc.request(f"natsflow.api.{verb}", orjson.dumps(body), timeout=10)
    return (msg.headers or {}).get("Nats-Service-Error-Code"), orjson.loads(msg.data)


async def finished_execution(engine: Engine) -> str:
    await engine.deploy(EXAMPLES / "hello.yaml")
    execution = await engine.start("hello", {"name": "Ada"})
    await engine.wait_done(execution)
    return execution


async def stats(nc: NatsClient) -> dict[str, dict[str, Any]]:
    """``$SRV.STATS.natsflow``: each endpoint's statistics by name."""
    msg = await nc.request("$SRV.STATS.natsflow", b"", timeout=5)
    return {e["name"]: e for e in orjson.loads(msg.data)["endpoints"]}


async def test_start_with_an_unknown_field_is_refused_naming_it(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(EXAMPLES / "hello.yaml")
        code, body = await raw(engine.nc, "start", {"workflow": "hello", "inptu": {"name": "A"}})
        rows = await engine.ls()
    assert code == "400"
    assert body == {"error": "inptu: unknown field", "problems": []}
    assert rows == []  # no execution was started with input null


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "weird"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"workflow": "no.dots"}, "workflow"),
        ({"verb": "show"}, "verb"),  # the tag may be left out, never contradict the subject
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-45"}, "until"),
        ({"after": "not-a-cursor"}, "after"),
        ({"parent": "a.b"}, "parent"),
        ({"status": "lost"}, "status"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_ls_refuses_invalid_filters_naming_the_field(
    nats_server: EmbeddedServer, body: dict[str, Any], field: str
) -> None:
    async with running(nats_server) as engine:
        code, answer = await raw(engine.nc, "ls", body)
        tagged = await raw(engine.nc, "ls", {"verb": "ls", "status": "failed"})
    assert code == "400", answer
    assert answer["error"].startswith(f"{field}: "), answer
    assert tagged == (None, {"executions": []})


async def test_errors_map_to_codes_and_client_exceptions(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        execution = await finished_execution(engine)
        client = engine.client
        unknown = await raw(engine.nc, "show", {"execution_id": "hello-nope"})
        with pytest.raises(natsflow.NotFound, match="hello-nope"):
            await client.show("hello-nope")
        with pytest.raises(natsflow.NotFound, match="not deployed"):
            await client.start("ghost")
        finished = await raw(engine.nc, "cancel", {"execution_id": execution})
        with pytest.raises(natsflow.Conflict, match="only a running one can be cancelled"):
            await client.cancel(execution)
        with pytest.raises(
            natsflow.Conflict, match="is completed: a signal can only reach a running one"
        ):
            await client.signal(execution, "approve", {"by": "ann"})
        with pytest.raises(natsflow.InputError, match="execution_id: "):
            await client.show("")
        with pytest.raises(natsflow.ManifestError) as refused:
            await client.deploy("name: broken\nsteps: {a: {action: teleport}}", source="b.yaml")
    assert unknown[0] == "404"
    assert finished[0] == "409"
    assert "completed" in finished[1]["error"]
    assert refused.value.source == "b.yaml"
    assert any("teleport" in problem for problem in refused.value.problems)


async def test_srv_stats_counts_error_replies(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        execution = await finished_execution(engine)
        before = await stats(engine.nc)
        for _ in range(3):
            await raw(engine.nc, "start", {"workflow": "hello", "inptu": 1})
            await raw(engine.nc, "show", {"execution_id": "hello-nope"})
            await raw(engine.nc, "cancel", {"execution_id": execution})
        await raw(engine.nc, "show", {"execution_id": execution})

        async def counted() -> dict[str, dict[str, Any]]:
            after = await stats(engine.nc)
            for verb in ("start", "show", "cancel"):
                assert after[verb]["num_errors"] == before[verb]["num_errors"] + 3, after[verb]
            return after

        after = await eventually(counted, within=5)  # a reply leaves before its tally
    assert after["show"]["num_requests"] >= before["show"]["num_requests"] + 4
    assert after["start"]["last_error"] == "400:inptu: unknown field"
    assert after["show"]["last_error"].startswith("404:")
    assert after["cancel"]["last_error"].startswith("409:")
    assert after["show"]["processing_time"] > 0


async def test_a_client_without_a_service_is_told_none_runs(nats_server: EmbeddedServer) -> None:
    async with await natsflow.Client.connect(nats_server.url) as client:
        with pytest.raises(natsflow.Unavailable, match="no natsflow service is running"):
            await client.workflows()


async def test_http_answers_503_while_nats_server_is_stopped(
    nats_server: EmbeddedServer,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        execution = await finished_execution(engine)
        await nats_server.stop()
        try:

            async def unavailable() -> tuple[int, Any]:
                async with http.get(f"{base}/v1/executions/{execution}") as resp:
                    assert resp.status == 503, resp.status
                    assert resp.headers["Retry-After"] == "1"
                    return resp.status, await resp.json()

            _, body = await eventually(unavailable, within=10)
            async with http.post(
                f"{base}/v1/workflows/hello/executions", json={"input": {"name": "Bo"}}
            ) as resp:
                started = resp.status, await resp.json()
            async with http.get(f"{base}/readyz") as resp:  # not ready while NATS is away
                not_ready = resp.status
        finally:
            await nats_server.start()

        async def back() -> None:
            async with http.get(f"{base}/v1/executions/{execution}") as resp:
                assert resp.status == 200, resp.status
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200, resp.status

        await eventually(back, within=20)
        # Work goes on after the restart: a new execution runs to its end.
        again = await engine.start("hello", {"name": "Bo"})
        assert (await engine.wait_done(again, timeout=20))["status"] == "completed"
    assert not_ready == 503
    assert "NATS" in body["error"]
    assert started[0] == 503
