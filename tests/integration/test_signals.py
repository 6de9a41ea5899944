"""Signals and the ``wait`` action against a real nats-server: a signal sent before or
after its wait begins, a wait's timeout taking its declared path, a wait on a subject,
and signals refused for a finished or unknown execution."""

from __future__ import annotations

from typing import Any

import pytest

from natsflow.events.errors import Conflict, NotFound
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running

APPROVAL = """
name: approval
steps:
  nap:
    action: sleep
    with: {duration: "${{ input.nap }}"}
  approve:
    action: wait
    needs: [nap]
    with: {signal: approve}
    timeout: 60s
output: "${{ steps.approve.output }}"
"""

TIMEOUTS = """
name: timeouts
steps:
  approve:
    action: wait
    with:
      signal: approve
      on_timeout: "${{ input.on_timeout }}"
      default: {approved: false}
    timeout: 500ms
output: "${{ steps.approve.output }}"
"""

SETTLED = """
name: settled
steps:
  settled:
    action: wait
    with: {subject: "payments.${{ input.order_id }}.settled"}
    timeout: 60s
output: "${{ steps.settled.output }}"
"""


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def wait_step_waiting(engine: Engine, execution: str, step: str) -> dict[str, Any]:
    async def waiting() -> dict[str, Any]:
        shown = await engine.show(execution)
        assert shown["steps"].get(step, {}).get("status") == "waiting", shown
        return shown

    return await eventually(waiting, within=10)


async def test_a_signal_sent_after_the_wait_begins_resumes_it(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(APPROVAL)
        execution = await engine.start("approval", {"nap": 0})
        shown = await wait_step_waiting(engine, execution, "approve")
        assert shown["steps"]["approve"]["waiting_for"] == "signal approve"
        sent = await engine.client.signal(execution, "approve", {"by": "ada"})
        done = await engine.wait_done(execution)
        events = await engine.history(execution)
    assert sent.signal == "approve"
    assert sent.id
    assert done["status"] == "completed", done
    assert done["output"] == {"by": "ada"}
    order = types_of(events)
    assert order.index("wait_started") < order.index("signal_received")
    assert order.index("signal_received") < order.index("signal_consumed")


async def test_a_signal_sent_before_the_wait_begins_is_kept(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(APPROVAL)
        execution = await engine.start("approval", {"nap": "1s"})
        await engine.wait_for(execution, ("running",), 10)
        await engine.client.signal(execution, "approve", {"n": 1}, id="first")
        await engine.client.signal(execution, "approve", {"n": 1}, id="first")  # counts once
        done = await engine.wait_done(execution)
        events = await engine.history(execution)
    assert done["status"] == "completed", done
    assert done["output"] == {"n": 1}
    order = types_of(events)
    assert order.count("signal_received") == 1
    assert order.index("signal_received") < order.index("wait_started")
    consumed = next(e for e in events if e["type"] == "signal_consumed")
    assert consumed["signal_id"] == "first"
    assert consumed["step"] == "approve"


@pytest.mark.parametrize("path", ["fail", "continue"])
async def test_a_wait_that_times_out_takes_its_declared_path(
    nats_server: EmbeddedServer, path: str
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(TIMEOUTS)
        execution = await engine.start("timeouts", {"on_timeout": path})
        done = await engine.wait_done(execution)
    step = done["steps"]["approve"]
    if path == "fail":
        assert done["status"] == "failed", done
        assert step["status"] == "failed"
        assert step["error_kind"] == "timeout"
        assert "timed out" in step["error"]
        assert "approve" in step["error"]
    else:
        assert done["status"] == "completed", done
        assert done["output"] == {"approved": False}


async def test_a_wait_on_a_subject_resumes_when_a_matching_message_is_published(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(SETTLED)
        execution = await engine.start("settled", {"order_id": "o-17"})
        shown = await wait_step_waiting(engine, execution, "settled")
        assert shown["steps"]["settled"]["waiting_for"] == "subject payments.o-17.settled"
        await engine.nc.publish("payments.o-99.settled", b'{"amount": 1}')  # another order

        # A subject wait hears messages published once its subscription is in place
        # (a moment after the wait begins): publish until it is heard.
        async def heard() -> dict[str, Any]:
            await engine.nc.publish("payments.o-17.settled", b'{"amount": 42}')
            await engine.nc.flush()
            shown = await engine.show(execution)
            assert shown["status"] == "completed", shown
            return shown

        done = await eventually(heard, within=10)
        events = await engine.history(execution)
    assert done["output"] == {"amount": 42}
    received = [e for e in events if e["type"] == "signal_received"]
    assert [e["name"] for e in received] == ["payments.o-17.settled"]
    assert received[0]["step"] == "settled"


async def test_a_signal_to_a_finished_or_unknown_execution_is_refused(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(TIMEOUTS)
        execution = await engine.start("timeouts", {"on_timeout": "continue"})
        await engine.wait_done(execution)
        with pytest.raises(Conflict, match=f"execution {execution} is completed: a signal"):
            await engine.client.signal(execution, "approve", {})
        with pytest.raises(NotFound):
            await engine.client.signal("timeouts-nosuchexecution", "approve", {})
