"""A decision appended whose commands never went out is completed when its message returns.

nats-server killed with -9 can deliver an unacked message again with a delivery
count of 1, so the actor cannot rely on the count: each batch records the inbox
message it answered, and that message coming back (whatever its count) makes the
actor carry out the decision's commands again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from nats.aio.client import Client

from natsflow.actors.effects import Effects
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    TASKS_STREAM,
    WORKERS_CONSUMER,
    inbox_subject,
    provision,
    task_subject,
)
from natsflow.events.commands import AnyCommand, DispatchTask
from natsflow.events.errors import Unavailable
from natsflow.events.messages import Start, Task, json_encoder
from natsflow.events.model import INITIAL, StepScheduled
from natsflow.manifests.decider import ManifestDecider
from natsflow.manifests.loader import parse_manifest
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running, service_config

TWO_STEPS = "name: two\nsteps:\n  a: {action: noop}\n  b: {action: noop, needs: [a]}\n"


async def test_a_first_delivery_of_an_answered_message_sends_its_lost_commands(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    await provision(js, ack_wait=service_config(nats_server.url).takeover_after)
    workflow = parse_manifest(TWO_STEPS, "yaml")
    version, _ = await Definitions(js).deploy(workflow)
    execution = "two-lost-commands"
    start = Start(workflow="two", version=version, input={})
    stored = await js.publish(inbox_subject(execution), json_encoder.encode(start))
    # An instance decided on this Start and appended, then died before its task went
    # out and before its ack: the message is still there, never delivered since.
    decision = ManifestDecider(workflow).react(
        replace(INITIAL, execution_id=execution), start, time.time()
    )
    assert [type(e) for e in decision.events][-1] is StepScheduled
    await EventStore(nc, js).append(execution, decision.events, 0, cause=stored.seq)

    async with running(nats_server) as engine:
        shown = await engine.wait_done(execution, timeout=20)
    assert shown["status"] == "completed", shown
    assert [s["status"] for s in shown["steps"].values()] == ["completed", "completed"]


async def test_commands_that_failed_to_go_out_are_sent_later(
    nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS refuses a decision's commands once (after its batch was appended): they are
    owed, sent later, and the execution completes with each step run once."""
    failures: list[tuple[AnyCommand, ...]] = []
    carry_out = Effects.carry_out

    async def flaky(self: Effects, commands: tuple[AnyCommand, ...]) -> None:
        if not failures and any(isinstance(c, DispatchTask) and c.step == "b" for c in commands):
            failures.append(commands)
            raise Unavailable("publish to natsflow.task.noop: NATS unavailable (test)")
        await carry_out(self, commands)

    monkeypatch.setattr(Effects, "carry_out", flaky)
    async with running(nats_server) as engine:
        await engine.deploy(TWO_STEPS)
        execution = await engine.start("two", {})
        shown = await engine.wait_done(execution, timeout=20)
    assert failures, "the failure was never injected"
    assert shown["status"] == "completed", shown
    assert [len(s["attempts"]) for s in shown["steps"].values()] == [1, 1]


async def test_a_task_delivered_again_after_its_result_was_recorded_is_not_run(
    nats_server: EmbeddedServer, nc: Client, tmp_path: Path
) -> None:
    """A worker that dies after its result is stored and before the task's ack leaves
    the task to come back (delivery count 2): it is acked, not run again."""
    effects = tmp_path / "effects.log"
    manifest = (
        "name: once\nsteps:\n  a:\n    action: shell\n    with:\n"
        "      argv: [sh, -c, 'echo ran >> \"$0\"', '${{ input.path }}']\n"
    )
    async with running(nats_server) as engine:
        await engine.deploy(manifest)
        execution = await engine.start("once", {"path": str(effects)})
        assert (await engine.wait_done(execution, timeout=20))["status"] == "completed"
    assert effects.read_text().splitlines() == ["ran"]

    # The same attempt's task again, delivered once and handed back: count 2 next time.
    task = Task(
        execution_id=execution,
        step="a",
        attempt=1,
        action="shell",
        input={"argv": ["sh", "-c", 'echo ran >> "$0"', str(effects)]},
        idempotency_key=f"{execution}:a:1",
        reply_to=inbox_subject(execution),
    )
    js = nc.jetstream()
    await js.publish(task_subject("shell"), json_encoder.encode(task))
    pulled = await js.pull_subscribe_bind(durable=WORKERS_CONSUMER, stream=TASKS_STREAM)
    [first] = await pulled.fetch(1, timeout=5)
    await first.nak()
    await pulled.unsubscribe()

    async with running(nats_server):

        async def settled() -> None:
            info = await js.consumer_info(TASKS_STREAM, WORKERS_CONSUMER)
            assert (info.num_pending, info.num_ack_pending) == (0, 0)

        await eventually(settled, within=10)
    assert effects.read_text().splitlines() == ["ran"]


async def test_a_message_that_failed_for_a_passing_reason_comes_again_soon(
    nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS refuses an append once: the message is NAKed with a short delay, so it is
    handled again well before the ack wait (here far beyond the test's deadline)."""
    refused: list[str] = []
    append = EventStore.append

    async def flaky(self: EventStore, execution: str, *args: Any, **kwargs: Any) -> int:
        if not refused:
            refused.append(execution)
            raise Unavailable("publish to natsflow.ev: NATS unavailable (test)")
        return await append(self, execution, *args, **kwargs)

    monkeypatch.setattr(EventStore, "append", flaky)
    async with running(nats_server, takeover_after=600) as engine:
        await engine.deploy(TWO_STEPS)
        execution = await engine.start("two", {})
        shown = await engine.wait_done(execution, timeout=20)
    assert refused == [execution]
    assert shown["status"] == "completed", shown
