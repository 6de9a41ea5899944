"""Custom actions against a real nats-server: a foreign worker (plain nats-py, no natsflow
import in its loop) serves ``billing.charge`` on its own consumer while natsflow serves
``shell``; with no worker, ``show`` says the step waits and the metric counts the queue; an
output that breaks the declared schema fails the attempt, retried per policy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import nats.errors
from nats.aio.client import Client as Nats

from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import running

PAY = """
name: pay
actions:
  billing.charge:
    input:
      type: object
      required: [amount]
      properties: {amount: {type: number, minimum: 0}}
    output:
      type: object
      required: [receipt]
      properties: {receipt: {type: string}}
steps:
  charge:
    action: billing.charge
    with: {amount: "${{ input.amount }}"}
    retry: {attempts: 2, delay: 0.1, backoff: fixed}
  notify:
    action: shell
    needs: [charge]
    with: {argv: [echo, '{"sent": "${{ steps.charge.output.receipt }}"}']}
output: "${{ steps.notify.output }}"
"""
STREAM = "NATSFLOW_TASKS"
CONSUMER = "natsflow-action-billing_charge"


@asynccontextmanager
async def foreign_worker(
    url: str, answer: Callable[[dict[str, Any]], Any]
) -> AsyncIterator[list[dict[str, Any]]]:
    """A worker as another team writes it from the README: a pull consumer bound to the
    action's durable consumer, the result published to the task's ``reply_to`` (PubAck
    awaited, ``Nats-Msg-Id: result:<key>``), then the task acked. Yields the tasks seen."""
    seen: list[dict[str, Any]] = []
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)

    async def serve() -> None:
        while True:
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                task = json.loads(msg.data)
                seen.append(task)
                result = {
                    "kind": "result",
                    "step": task["step"],
                    "attempt": task["attempt"],
                    "iteration": task["iteration"],
                    "ok": True,
                    "output": answer(task),
                }
                await js.publish(
                    task["reply_to"],
                    json.dumps(result).encode(),
                    headers={"Nats-Msg-Id": "result:" + task["idempotency_key"]},
                )
                await msg.ack()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            yield seen
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


async def test_a_foreign_worker_serves_its_action_and_natsflow_serves_shell(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(PAY)
        answer = lambda task: {"receipt": f"r-{task['input']['amount']}"}  # noqa: E731
        async with foreign_worker(nats_server.url, answer) as seen:
            execution = await engine.start("pay", {"amount": 12})
            done = await engine.wait_done(execution)
        assert done["status"] == "completed", done
        assert done["output"] == {"sent": "r-12"}
        assert [(t["action"], t["input"]) for t in seen] == [("billing.charge", {"amount": 12})]
        assert done["steps"]["notify"]["status"] == "completed"  # natsflow's own shell worker


async def test_without_a_worker_show_says_waiting_and_the_metric_counts_the_queue(
    nats_server: EmbeddedServer, nc: Nats
) -> None:
    port = free_port()
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        await engine.deploy(PAY)
        js = nc.jetstream()
        info = await js.consumer_info(STREAM, CONSUMER)  # made by the deploy
        assert info.config.filter_subject == "natsflow.task.billing_charge"
        executions = [await engine.start("pay", {"amount": n}) for n in range(3)]

        async def waiting() -> str:
            step = (await engine.show(executions[0]))["steps"]["charge"]
            assert step["status"] == "scheduled"
            assert step["reason"] == "waiting for a worker of billing.charge, 3 queued"
            return str(step["reason"])

        await eventually(waiting, within=10)

        async def counted() -> None:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            assert 'natsflow_action_queue_depth{action="billing.charge"} 3.0' in text
            assert 'natsflow_action_workers_pulling{action="billing.charge"} 0.0' in text

        await eventually(counted, within=10, interval=0.5)
        # natsflow's own workers never took them: they are all still in the action's queue
        assert (await js.consumer_info(STREAM, CONSUMER)).num_pending == 3
        # a worker comes: everything runs to the end
        answer = lambda task: {"receipt": "ok"}  # noqa: E731
        async with foreign_worker(nats_server.url, answer):
            for execution in executions:
                assert (await engine.wait_done(execution))["status"] == "completed"
        shown = await engine.show(executions[0])
        assert shown["steps"]["charge"]["reason"] is None


async def test_an_output_that_breaks_the_schema_fails_the_attempt_and_is_retried(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(PAY)
        answer = lambda task: {"receipt": 42}  # noqa: E731
        async with foreign_worker(nats_server.url, answer) as seen:
            execution = await engine.start("pay", {"amount": 1})
            done = await engine.wait_done(execution)
        assert done["status"] == "failed"
        assert [t["attempt"] for t in seen] == [1, 2]  # retried per policy (attempts: 2)
        charge = done["steps"]["charge"]
        assert charge["error_kind"] == "invalid_output"
        assert [a["kind"] for a in charge["attempts"]] == ["invalid_output", "invalid_output"]
        assert charge["error"] == (
            'the output of billing.charge does not fit actions["billing.charge"].output: '
            "output.receipt: 42 is not of type 'string'"
        )
        assert done["steps"]["notify"]["status"] == "blocked"


async def test_an_input_that_breaks_the_schema_fails_before_any_task(
    nats_server: EmbeddedServer, nc: Nats
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(PAY)
        execution = await engine.start("pay", {"amount": -5})
        done = await engine.wait_done(execution)
        assert done["status"] == "failed"
        charge = done["steps"]["charge"]
        assert charge["error_kind"] == "invalid_input"
        assert "input.amount: -5 is less than the minimum of 0" in charge["error"]
        info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
        assert info.num_pending == 0  # nothing was dispatched
