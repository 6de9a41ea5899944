"""A code workflow can declare triggers too: a message on its subject, or a due time of
its schedule, starts an execution that runs in the app's process."""

from __future__ import annotations

from typing import Any

import orjson

import natsflow
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration import triggered_app
from tests.integration.harness import running


async def test_a_code_workflows_subject_and_schedule_triggers_start_it(
    nats_server: EmbeddedServer,
) -> None:
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=triggered_app, ack_wait=2.0),
    ):

        async def listed() -> None:
            rows = (await engine.client.triggers()).triggers
            assert {r.workflow for r in rows} == {"trig_orders", "trig_tick"}, rows

        await eventually(listed, within=10)
        await engine.nc.publish("codeorders.eu.created", orjson.dumps({"order": 42}))

        async def both_completed() -> list[dict[str, Any]]:
            rows = await engine.ls()
            done = {r["workflow"] for r in rows if r["status"] == "completed"}
            assert {"trig_orders", "trig_tick"} <= done, rows
            return rows

        rows = await eventually(both_completed, within=20)
        order = next(r for r in rows if r["workflow"] == "trig_orders")
        shown = await engine.show(order["execution_id"])
        started = (await engine.history(order["execution_id"]))[0]
    assert order["execution_id"].startswith("trig==trig_orders-")  # run by the app
    assert shown["output"] == {"stamped": 42}
    assert started["type"] == "execution_started"
    assert started["trigger"]["subject"] == "codeorders.eu.created"
