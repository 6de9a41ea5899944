"""The ``app`` role enforced by NATS: a code app's process (``natsflow.Worker``) runs a
code workflow end to end as a user with only that role's permissions, and cannot pull
another app's consumer nor publish to another app's inbox (the server refuses both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import natsflow
from natsflow.actors.jetstream.topology import INBOX_STREAM, TASKS_STREAM, inbox_subject
from natsflow.code import load_app
from natsflow.events.errors import Unavailable
from natsflow.events.messages import Cancel, json_encoder
from natsflow.service.app import serve
from natsflow.service.client import Client
from natsflow.service.roles import permissions
from tests.eventually import eventually
from tests.integration import children_app, code_app
from tests.integration.harness import service_config
from tests.integration.roles_server import RolesServer, Users, allowed, refused, run_roles_server

APP = load_app([code_app])
KIDS = load_app([children_app])
USERS: Users = (
    ("natsflow", "s3rvice", permissions("service")),
    (
        "itest",
        "4pp",
        permissions("app", app=APP.name, steps=sorted(APP.steps), workflows=sorted(APP.workflows)),
    ),
    (
        "kids",
        "k1ds",
        permissions("app", app="kids", steps=sorted(KIDS.steps), workflows=sorted(KIDS.workflows)),
    ),
)


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[RolesServer]:
    async with run_roles_server(tmp_path, USERS) as server:
        yield server


async def test_an_app_runs_its_code_workflow_under_the_app_role_and_nothing_else(
    app_server: RolesServer,
) -> None:
    code_app.RUNS.clear()
    config = service_config(app_server.url("natsflow"), workers=0)
    async with anyio.create_task_group() as tg:
        await tg.start(serve, config)  # the service under its own role user
        async with (
            app_server.as_user("natsflow") as (service_nc, _),
            app_server.as_user("itest") as (nc, refusals),
        ):
            operator = Client(service_nc, request_timeout=10)
            await eventually(operator.workflows, within=20, ignoring=(Unavailable,))
            async with natsflow.Worker(nc=nc, app=APP, ack_wait=2.0):
                execution = (await operator.start("itest_docs", {"name": "roles"})).execution_id

                async def waiting() -> None:
                    shown = await operator.show(execution)
                    step = shown.steps.get("~signal:approve#3")
                    assert step is not None
                    assert step.status == "waiting", shown

                await eventually(waiting, within=20)
                await operator.signal(execution, "approve", {"by": "ada"})
                done = await operator.wait(execution, within=20)
                assert refusals.seen == [], refusals.seen
                assert (done.status, done.output) == ("completed", {"published": "roles:10:ada"})
                assert code_app.RUNS == ["fetch roles", "count roles", "publish roles"]

                other = "natsflow-app-kids"  # another app's consumers and inbox
                for stream, consumer in ((INBOX_STREAM, other), (TASKS_STREAM, f"{other}-steps")):
                    pull = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
                    reply = nc.new_inbox()
                    await refused(
                        nc,
                        refusals,
                        lambda p=pull, r=reply: nc.publish(p, b"1", reply=r),  # type: ignore[misc]
                        pull,
                    )
                inbox = inbox_subject("kids==kids_leaf-01J")
                cancel = json_encoder.encode(Cancel(reason="another app"))
                await refused(nc, refusals, lambda: nc.publish(inbox, cancel), inbox)
                api = "natsflow.api.cancel"
                await refused(nc, refusals, lambda: nc.publish(api, b"{}"), api)
                await allowed(nc, refusals, nc.flush)
        tg.cancel_scope.cancel()


async def test_an_app_under_the_app_role_starts_and_ends_children_of_both_kinds(
    app_server: RolesServer,
) -> None:
    config = service_config(app_server.url("natsflow"), workers=2)
    async with anyio.create_task_group() as tg:
        await tg.start(serve, config)
        async with (
            app_server.as_user("natsflow") as (service_nc, _),
            app_server.as_user("kids") as (nc, refusals),
        ):
            operator = Client(service_nc, request_timeout=10)
            await eventually(operator.workflows, within=20, ignoring=(Unavailable,))
            for manifest in (children_app.MANIFEST_LEAF, children_app.MANIFEST_PARENT):
                await operator.deploy(manifest)
            async with natsflow.Worker(nc=nc, app=KIDS, ack_wait=2.0):
                parent = (await operator.start("kids_parent", {"n": 5})).execution_id
                done = await operator.wait(parent, within=20)
                assert (done.status, done.output) == ("completed", {"from_manifest": {"got": 5}})
                manifest = (await operator.start("manifest-parent", {"n": 21})).execution_id
                done = await operator.wait(manifest, within=20)
                assert (done.status, done.output) == ("completed", {"child": {"doubled": 42}})
                assert refusals.seen == [], refusals.seen
        tg.cancel_scope.cancel()
