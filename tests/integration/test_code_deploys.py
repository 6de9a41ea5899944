"""Deploying changed code under running code executions, against a real nats-server:
``patched`` keeps a running execution on its old path while new ones take the new
one; an idle execution's kept coroutine leaves memory when its actor passivates."""

from __future__ import annotations

import natsflow
from natsflow import patched, sleep, wait_for_signal, workflow
from natsflow.code import CodeApp, load_app
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration import code_app
from tests.integration.harness import Engine, running

STEPS = load_app([code_app]).steps


@workflow(name="itest_patch")
async def before(order: dict[str, str]) -> dict[str, str]:
    doc = await code_app.fetch(order["name"])
    total = await code_app.count(doc)
    approval = await wait_for_signal("approve", timeout=60)
    return {"path": "old", "published": await code_app.publish(doc, total, approval["by"])}


@workflow(name="itest_patch")
async def after(order: dict[str, str]) -> dict[str, str]:
    doc = await code_app.fetch(order["name"])
    path = "old"
    if patched("settle-first"):  # the new code: a durable sleep before count
        await sleep(0.1)
        path = "new"
    total = await code_app.count(doc)
    approval = await wait_for_signal("approve", timeout=60)
    return {"path": path, "published": await code_app.publish(doc, total, approval["by"])}


async def wait_signal_step(engine: Engine, execution: str, key: str) -> None:
    async def waiting() -> None:
        shown = await engine.show(execution)
        assert shown["steps"].get(key, {}).get("status") == "waiting", shown

    await eventually(waiting, within=15)


async def test_patched_lets_old_and_new_executions_finish_on_their_paths(
    nats_server: EmbeddedServer,
) -> None:
    old_app = CodeApp("itest", {"itest_patch": before}, STEPS)
    new_app = CodeApp("itest", {"itest_patch": after}, STEPS)
    async with running(nats_server) as engine:
        async with natsflow.Worker(nats_server.url, app=old_app, ack_wait=2.0):
            old = await engine.start("itest_patch", {"name": "old"})
            await wait_signal_step(engine, old, "~signal:approve#2")
        # The old execution is past the patch point (count#1 done): a deploy of the new
        # code, whose history replays with patched() False.
        async with natsflow.Worker(nats_server.url, app=new_app, ack_wait=2.0):
            new = await engine.start("itest_patch", {"name": "new"})
            await wait_signal_step(engine, new, "~signal:approve#3")
            await engine.client.signal(old, "approve", {"by": "ada"})
            await engine.client.signal(new, "approve", {"by": "bob"})
            old_done = await engine.wait_done(old)
            new_done = await engine.wait_done(new)
    assert old_done["status"] == new_done["status"] == "completed", (old_done, new_done)
    assert old_done["output"] == {"path": "old", "published": "old:6:ada"}
    assert new_done["output"] == {"path": "new", "published": "new:6:bob"}
    assert set(old_done["steps"]) == {"fetch#0", "count#1", "~signal:approve#2", "publish#3"}
    assert {"~sleep#1", "count#2", "~signal:approve#3", "publish#4"} <= set(new_done["steps"])
    assert not any(key.startswith("~patched:") for key in old_done["steps"])


async def test_a_passivated_code_execution_leaves_no_coroutine_behind(
    nats_server: EmbeddedServer,
) -> None:
    code_app.RUNS.clear()
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=code_app, ack_wait=2.0, idle_timeout=0.4) as worker,
    ):
        execution = await engine.start("itest_docs", {"name": "idle"})
        await wait_signal_step(engine, execution, "~signal:approve#3")

        async def dropped() -> None:
            assert worker.deciders.kept() == 0
            assert worker.metrics.active_actors._value.get() == 0

        await eventually(dropped, within=15)
        replays = worker.deciders.replays()
        await engine.client.signal(execution, "approve", {"by": "ada"})
        done = await engine.wait_done(execution)
    assert done["status"] == "completed", done
    assert worker.deciders.replays() == replays + 1  # activated again: one replay
    assert code_app.RUNS == ["fetch idle", "count idle", "publish idle"]
