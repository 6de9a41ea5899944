"""A code workflow end to end against a real nats-server: deployed by an embedded
``natsflow.Worker``, started through the service, three steps, a durable sleep and a
signal wait, run in the app's process, visible in ``show``, ``history`` and ``ls``."""

from __future__ import annotations

from typing import Any

import pytest

import natsflow
from natsflow import sleep, workflow
from natsflow.code import CodeApp, load_app
from natsflow.events.errors import InputError
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration import code_app
from tests.integration.harness import running


async def test_a_code_workflow_runs_in_its_apps_process(nats_server: EmbeddedServer) -> None:
    code_app.RUNS.clear()
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=code_app, ack_wait=2.0) as worker,
    ):
        started = await engine.client.start("itest_docs", {"name": "guide"})
        execution = started.execution_id
        assert execution.startswith("itest==itest_docs-")
        assert started.version == worker.versions["itest_docs"]

        async def waiting() -> None:
            shown = await engine.show(execution)
            step = shown["steps"].get("~signal:approve#3", {})
            assert step.get("status") == "waiting", shown

        await eventually(waiting, within=15)
        await engine.client.signal(execution, "approve", {"by": "ada"})
        done = await engine.wait_done(execution)
        events = await engine.history(execution)
        rows = await engine.ls(workflow="itest_docs")
        again = await engine.client.start("itest_docs", {"name": "guide"})
    assert done["status"] == "completed", done
    assert done["output"] == {"published": "guide:10:ada"}
    for key in ("fetch#0", "count#1", "~sleep#2", "~signal:approve#3", "publish#4"):
        assert done["steps"][key]["status"] == "completed", (key, done)
    types = [e["type"] for e in events]
    assert types[0] == "execution_started"
    assert types[-1] == "execution_completed"
    assert "timer_fired" in types
    assert "signal_consumed" in types
    assert code_app.RUNS == ["fetch guide", "count guide", "publish guide"]
    assert any(r["execution_id"] == execution and r["status"] == "completed" for r in rows)
    assert again.execution_id == execution
    assert not again.created
    assert worker.deciders.replays() <= 2  # sticky: not one replay per step


@workflow(name="itest_docs", idempotency_key="${{ input.name }}")
async def reordered(order: dict[str, str]) -> dict[str, str]:
    doc = await code_app.fetch(order["name"])
    await sleep(0.2)  # moved before count: position 1 is no longer count
    total = await code_app.count(doc)
    return {"published": await code_app.publish(doc, total, "nobody")}


async def test_code_changed_under_a_running_execution_parks_it_until_restored(
    nats_server: EmbeddedServer,
) -> None:
    changed = CodeApp("itest", {"itest_docs": reordered}, load_app([code_app]).steps)
    async with running(nats_server) as engine:
        async with natsflow.Worker(nats_server.url, app=code_app, ack_wait=2.0):
            execution = (await engine.client.start("itest_docs", {"name": "parked"})).execution_id

            async def waiting() -> None:
                shown = await engine.show(execution)
                step = shown["steps"].get("~signal:approve#3", {})
                assert step.get("status") == "waiting", shown

            await eventually(waiting, within=15)
        async with natsflow.Worker(nats_server.url, app=changed, ack_wait=2.0, parked_retry=0.3):
            await engine.client.signal(execution, "approve", {"by": "ada"})

            async def parked() -> dict[str, Any]:
                shown = await engine.show(execution)
                assert (shown["error"] or "").startswith("parked: "), shown
                return shown

            shown = await eventually(parked, within=15)
        assert shown["status"] == "running"
        assert "nondeterminism at decision 1" in shown["error"]
        assert "the code decides ~sleep" in shown["error"]
        assert "the history recorded count" in shown["error"]
        async with natsflow.Worker(nats_server.url, app=code_app, ack_wait=2.0, parked_retry=0.3):
            done = await engine.wait_done(execution, timeout=30)
    assert done["status"] == "completed", done
    assert done["output"] == {"published": "parked:12:ada"}


@workflow(name="itest_fails")
async def fails(order: dict[str, str]) -> str:
    doc = await code_app.fetch(order["name"])
    raise ValueError(f"no place for {doc.name}")


async def test_resume_from_a_step_of_a_code_execution_is_refused_not_ignored(
    nats_server: EmbeddedServer,
) -> None:
    """``--from`` re-runs a manifest step and its dependants; a code execution has no such
    plan (it replays its calls in order), so the step named must not be accepted and then
    silently not re-run."""
    app = CodeApp("itest", {"itest_fails": fails}, load_app([code_app]).steps)
    async with running(nats_server) as engine, natsflow.Worker(nats_server.url, app=app):
        execution = (await engine.client.start("itest_fails", {"name": "x"})).execution_id
        failed = await engine.wait_done(execution)
        assert failed["status"] == "failed", failed
        with pytest.raises(InputError, match="code workflow"):
            await engine.client.resume(execution, from_step="fetch")
        resumed = await engine.client.resume(execution)  # from where it failed: still fine
    assert resumed.execution_id == execution
