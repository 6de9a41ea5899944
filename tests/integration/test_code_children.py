"""Child workflows across the two kinds, against a real nats-server: a manifest's
``workflow`` step starts a code workflow (its id is routed to the app:
``<app>==<parent>=<step>``), and a code workflow starts a manifest child; cancelling a
manifest parent cancels its code child in the app."""

from __future__ import annotations

from contextlib import aclosing

import natsflow
from natsflow.events.errors import NotFound
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration import children_app, code_app
from tests.integration.harness import running

WAITING_PARENT = """
name: manifest-waits
steps:
  run:
    action: workflow
    with: {workflow: itest_docs, input: {name: "${{ input.name }}"}}
"""


async def test_a_manifest_starts_a_code_child_routed_to_its_app(
    nats_server: EmbeddedServer,
) -> None:
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=children_app, ack_wait=2.0),
    ):
        await engine.deploy(children_app.MANIFEST_PARENT)
        execution = await engine.start("manifest-parent", {"n": 21})
        done = await engine.wait_done(execution)
        # The parent's pure decider recorded the child without the app (it cannot know
        # the child is code); the starter routed it to the app.
        assert done["steps"]["run"]["child"] == f"{execution}=run"
        child = f"kids=={execution}=run"
        shown = await engine.show(child)
        # ``show`` of the child id as the parent prints it finds the app's child.
        printed = await engine.show(done["steps"]["run"]["child"])
        # So do ``history`` and ``watch`` (``natsflow history/watch <printed id>``).
        history = await engine.client.history(done["steps"]["run"]["child"])
        own = await engine.client.history(child)
        async with aclosing(engine.client.watch(done["steps"]["run"]["child"])) as views:
            watched = [view async for view in views]
    assert printed == shown
    assert history == own
    assert history.execution_id == child
    assert [e["type"] for e in history.events][-1] == "execution_completed"
    assert watched[-1].execution_id == child
    assert watched[-1].status == "completed"
    assert done["status"] == "completed", done
    assert done["output"] == {"child": {"doubled": 42}}
    assert shown["status"] == "completed"
    assert shown["parent"]["execution_id"] == execution


async def test_a_code_workflow_starts_a_manifest_child(nats_server: EmbeddedServer) -> None:
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=children_app, ack_wait=2.0),
    ):
        await engine.deploy(children_app.MANIFEST_LEAF)
        execution = await engine.start("kids_parent", {"n": 5})
        done = await engine.wait_done(execution)
    assert done["status"] == "completed", done
    assert done["output"] == {"from_manifest": {"got": 5}}
    child = done["steps"]["~child:manifest-leaf#0"]["child"]
    assert "==" not in child  # a manifest child: the service's own executor decides it


async def test_cancelling_a_manifest_parent_cancels_its_code_child(
    nats_server: EmbeddedServer,
) -> None:
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=code_app, ack_wait=2.0),
    ):
        await engine.deploy(WAITING_PARENT)
        execution = await engine.start("manifest-waits", {"name": "kid"})
        child = f"itest=={execution}=run"

        async def waiting() -> None:
            try:
                shown = await engine.show(child)
            except NotFound as exc:
                raise AssertionError(str(exc)) from None
            assert shown["steps"].get("~signal:approve#3", {}).get("status") == "waiting"

        await eventually(waiting, within=15)
        # ``watch`` of the id the parent prints follows the app's child live to its end.
        async with aclosing(engine.client.watch(f"{execution}=run")) as views:
            first = await anext(views)
            await engine.client.cancel(execution)
            rest = [view async for view in views]
        done = await engine.wait_done(child)
    assert done["status"] == "cancelled", done
    assert (first.execution_id, first.status) == (child, "running")
    assert (rest[-1].execution_id, rest[-1].status) == (child, "cancelled")
