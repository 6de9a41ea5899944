"""A ``@step`` reads its attempt's idempotency key with ``step_context()`` against a
real nats-server: each attempt writes its key to a side-effect file, a retried
attempt gets a new key, and every key is the one the task carried."""

from __future__ import annotations

from pathlib import Path

import anyio
from nats.aio.msg import Msg

import natsflow
from natsflow import step, step_context, workflow
from natsflow.actors.jetstream.topology import task_subject
from natsflow.code import CodeApp
from natsflow.code.definition import step_action
from natsflow.events.messages import task_decoder
from natsflow.manifests.schema import RetryPolicy
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running


@step(retry=RetryPolicy(attempts=3, backoff="fixed", delay=0.1))
def charge(path: str) -> str:  # sync: it runs in a worker thread, the context with it
    ctx = step_context()
    with Path(path).open("a") as out:  # the side effect: one line per attempt
        out.write(f"{ctx.attempt} {ctx.idempotency_key}\n")
    anyio.from_thread.run(ctx.progress, f"charged on attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise RuntimeError("the payment service timed out")  # retryable
    return ctx.idempotency_key


@workflow(name="ikey_charge")
async def pay(order: dict[str, str]) -> dict[str, str]:
    return {"key": await charge(order["path"])}


APP = CodeApp("ikey", {"ikey_charge": pay}, {"charge": charge})


async def test_each_attempt_of_a_step_reads_its_own_idempotency_key(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=APP, ack_wait=2.0),
    ):
        task_keys: list[str] = []

        async def on_task(msg: Msg) -> None:
            task_keys.append(task_decoder.decode(msg.data).idempotency_key)

        # the tasks as the worker pool receives them (a core subscription sees them too)
        tasks = await engine.nc.subscribe(task_subject(step_action("ikey", "charge")), cb=on_task)
        execution = await engine.start("ikey_charge", {"path": str(effects)})
        done = await engine.wait_done(execution)

        async def both_tasks_seen() -> None:
            assert len(task_keys) == 2, task_keys

        await eventually(both_tasks_seen, within=10)
        await tasks.unsubscribe()
    assert done["status"] == "completed", done
    lines = [line.split() for line in effects.read_text().splitlines()]
    assert [attempt for attempt, _ in lines] == ["1", "2"]
    first, second = (key for _, key in lines)
    assert first == f"{execution}:charge#0:1"
    assert second == f"{execution}:charge#0:2"  # a retry: a new key
    assert [first, second] == task_keys  # the task's own key, not a copy built apart
    assert done["output"] == {"key": second}
    assert done["steps"]["charge#0"]["attempt"] == 2
