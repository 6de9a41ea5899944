"""Roles enforced by NATS: a nats-server run with ``natsflow.service.roles``' users, and
each role trying what it may and may not do (how a refusal is seen:
tests/integration/roles_server.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from nats.js import api

from natsflow.actors.jetstream.action_queues import action_consumer
from natsflow.actors.jetstream.topology import (
    TASKS_STREAM,
    WORKERS_CONSUMER,
    inbox_subject,
    result_subject,
    task_subject,
)
from natsflow.events.errors import Unavailable
from natsflow.events.messages import Cancel, Result, Start, Task, json_encoder, task_decoder
from natsflow.service.app import serve
from natsflow.service.client import Client
from natsflow.service.embedded import free_port
from natsflow.service.roles import permissions
from tests.eventually import eventually
from tests.integration.harness import service_config
from tests.integration.roles_server import (
    RolesServer,
    Users,
    allowed,
    refused,
    run_roles_server,
)
from tests.integration.test_dead_letters import HELLO, waiting_task

USERS: Users = (
    ("natsflow", "s3rvice", permissions("service")),
    ("billing", "w0rker", permissions("worker", actions=["billing.charge"])),
    ("shop", "tr1gger", permissions("trigger", subjects=["shop.orders.>"])),
    ("ops", "0perator", permissions("operator")),
    ("dash", "v1ewer", permissions("viewer")),
)


@pytest.fixture
async def roles_server(tmp_path: Path) -> AsyncIterator[RolesServer]:
    async with run_roles_server(tmp_path, USERS) as server:
        yield server


async def test_each_role_may_do_what_it_needs_and_nothing_else(
    roles_server: RolesServer,
) -> None:
    config = service_config(roles_server.url("natsflow"), workers=0)
    async with anyio.create_task_group() as tg:
        await tg.start(serve, config)  # the service under its own role user
        async with (
            roles_server.as_user("natsflow") as (service, _),
            roles_server.as_user("ops") as (ops_nc, ops_refusals),
        ):
            operator = Client(ops_nc, request_timeout=10)
            await eventually(operator.workflows, within=20, ignoring=(Unavailable,))
            await allowed(ops_nc, ops_refusals, lambda: operator.deploy_file(HELLO))
            execution = (await operator.start("hello", {"name": "Ada"})).execution_id
            task = await waiting_task(service)  # no natsflow workers: the task waits
            assert task.reply_to == result_subject(execution)

            await _trigger_publisher(roles_server, execution)
            await _worker(roles_server, service, execution)
            done = await allowed(ops_nc, ops_refusals, lambda: operator.wait(execution, within=20))
            assert (done.status, done.output) == ("completed", "charged")
            await _viewer(roles_server, execution)

            second = (await operator.start("hello", {"name": "Bo"})).execution_id
            cancelled = await allowed(ops_nc, ops_refusals, lambda: operator.cancel(second))
            assert cancelled.execution_id == second
        tg.cancel_scope.cancel()


async def _trigger_publisher(server: RolesServer, execution: str) -> None:
    async with server.as_user("shop") as (nc, refusals):
        await allowed(nc, refusals, lambda: nc.publish("shop.orders.new", b"{}"))
        cancel = json_encoder.encode(Cancel(reason="shop"))
        for subject in (
            task_subject("shell"),
            result_subject(execution),
            inbox_subject(execution),
            f"natsflow.ev.{execution}",
        ):
            await refused(nc, refusals, lambda s=subject: nc.publish(s, cancel), subject)  # type: ignore[misc]


async def _worker(server: RolesServer, service: NATS, execution: str) -> None:
    """The billing worker pulls its own tasks and answers on the result subject; it
    cannot send control messages, nor read another action's tasks."""
    consumer = action_consumer("billing.charge")
    # As the service does when a manifest uses the action (issue 10's custom actions).
    await service.jetstream().add_consumer(
        TASKS_STREAM,
        api.ConsumerConfig(
            durable_name=consumer,
            filter_subject=task_subject("billing.charge"),
            ack_policy=api.AckPolicy.EXPLICIT,
        ),
    )
    charge = Task(
        execution_id=execution,
        step="greet",
        attempt=1,
        action="billing.charge",
        idempotency_key=f"{execution}:greet:1",
        reply_to=result_subject(execution),
    )
    await service.jetstream().publish(task_subject("billing.charge"), json_encoder.encode(charge))

    async with server.as_user("billing") as (nc, refusals):
        js = nc.jetstream()
        inbox = inbox_subject(execution)
        start = json_encoder.encode(Start(workflow="hello", version="x"))
        cancel = json_encoder.encode(Cancel(reason="a worker"))
        await refused(nc, refusals, lambda: nc.publish(inbox, cancel), inbox)
        await refused(nc, refusals, lambda: nc.publish(inbox, start), inbox)
        for other in (WORKERS_CONSUMER, action_consumer("ml.embed")):
            pull = f"$JS.API.CONSUMER.MSG.NEXT.{TASKS_STREAM}.{other}"
            reply = nc.new_inbox()
            await refused(nc, refusals, lambda p=pull, r=reply: nc.publish(p, b"1", reply=r), pull)  # type: ignore[misc]
        create = f"$JS.API.CONSUMER.CREATE.{TASKS_STREAM}.mine.natsflow.task.>"
        await refused(nc, refusals, lambda: nc.publish(create, b"{}"), create)
        await refused(
            nc, refusals, lambda: nc.subscribe("natsflow.task.>"), "natsflow.task.>", "subscription"
        )

        async def serve_one() -> None:
            sub = await js.pull_subscribe_bind(durable=consumer, stream=TASKS_STREAM)
            [msg] = await sub.fetch(1, timeout=5)
            task = task_decoder.decode(msg.data)
            result = Result(step=task.step, attempt=task.attempt, ok=True, output="charged")
            await js.publish(task.reply_to, json_encoder.encode(result))
            await msg.ack()

        await allowed(nc, refusals, serve_one)


async def _viewer(server: RolesServer, execution: str) -> None:
    async with server.as_user("dash") as (nc, refusals):
        viewer = Client(nc, request_timeout=2)
        rows = await allowed(nc, refusals, lambda: viewer.ls())
        assert [r.execution_id for r in rows] == [execution]
        shown = await allowed(nc, refusals, lambda: viewer.show(execution))
        assert shown.status == "completed"

        async def cancel() -> None:
            with pytest.raises(Unavailable):  # the request never reaches the service
                await viewer.cancel(execution)

        await refused(nc, refusals, cancel, "natsflow.api.cancel")


async def test_the_embedded_server_says_it_is_open_and_passwords_stay_out_of_the_log(
    tmp_path: Path, roles_server: RolesServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsflow")
    embedded = service_config(
        "", nats_url=None, data_dir=str(tmp_path / "data"), nats_port=free_port(), workers=0
    )
    external = service_config(roles_server.url("natsflow"), workers=0)
    for config in (embedded, external):
        async with anyio.create_task_group() as tg:
            await tg.start(serve, config)
            tg.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert any("embedded nats-server is open: no authentication" in line for line in lines)
    assert any("loopback (127.0.0.1) only" in line for line in lines)
    assert any("natsflow:***@127.0.0.1" in line for line in lines)
    assert not any("s3rvice" in line for line in lines)
