"""Bad input never crashes the service: it lands in NATSFLOW_DLQ, named, and work goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.topology import DLQ_STREAM, inbox_subject, task_subject
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running

pytestmark = pytest.mark.sends_invalid_messages

HELLO = Path(__file__).parents[2] / "manifests" / "examples" / "hello.yaml"


async def dead_letter(nc: Client, subject: str, within: float = 10) -> dict[str, str]:
    """The headers of the dead letter for ``subject``, once there is one."""
    js = nc.jetstream()

    async def last() -> dict[str, str]:
        try:
            msg = await js.get_last_msg(DLQ_STREAM, subject)
        except NotFoundError:
            raise AssertionError(f"nothing dead-lettered on {subject}") from None
        return dict(msg.headers or {})

    return await eventually(last, within=within)


async def test_invalid_inbox_and_task_messages_are_dead_lettered(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server) as engine:
        await engine.deploy(HELLO)
        # A worker in another language sends a result whose attempt is not a number.
        bad_result = b'{"kind": "result", "step": "greet", "attempt": "one", "ok": true}'
        await js.publish(inbox_subject("hello-bogus"), bad_result)
        inbox_letter = await dead_letter(nc, "natsflow.dlq.inbox")
        assert "attempt" in inbox_letter["Natsflow-Error"]
        assert inbox_letter["Natsflow-Original-Subject"] == inbox_subject("hello-bogus")

        # A task that is not JSON at all.
        await js.publish(task_subject("noop"), b"not json")
        task_letter = await dead_letter(nc, "natsflow.dlq.task")
        assert "invalid task message" in task_letter["Natsflow-Error"]

        # The service is still serving.
        execution = await engine.start("hello", {"name": "Ada"})
        shown = await engine.wait_done(execution)
    assert shown["status"] == "completed"
    assert shown["output"] == {"greeting": "Hello, Ada!"}
