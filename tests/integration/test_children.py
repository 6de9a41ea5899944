"""Child workflows (the ``workflow`` action) end to end against a real nats-server."""

from __future__ import annotations

from functools import partial

from natsflow.actors.children import Children
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import inbox_subject
from natsflow.actors.starter import Starter
from natsflow.events.commands import StartChild
from natsflow.events.messages import ChildEnded, inbox_decoder
from natsflow.events.model import ExecutionState
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running

CHILD = """
name: child
input:
  type: object
  required: [n]
steps:
  echo:
    action: noop
    with: {got: "${{ input.n }}"}
output: "${{ steps.echo.output }}"
"""

PARENT = """
name: parent
steps:
  run:
    action: workflow
    with: {workflow: child, input: {n: "${{ input.n }}"}}
output: {child: "${{ steps.run.output }}"}
"""

FAILING_CHILD = """
name: failing-child
steps:
  boom:
    action: shell
    with: {argv: [python3, -c, "import sys; sys.exit(3)"]}
"""

RETRYING_PARENT = """
name: retrying-parent
steps:
  run:
    action: workflow
    with: {workflow: failing-child}
    retry: {attempts: 3, delay: 100ms}
"""

FAN_OUT = """
name: fan-out
steps:
  each:
    action: workflow
    for_each: {items: "${{ input.items }}", key: "${{ item.name }}", concurrency: 2}
    with: {workflow: child, input: {n: "${{ item.n }}"}}
output: "${{ steps.each.output }}"
"""

SLEEPER = """
name: sleeper
steps:
  nap: {action: sleep, with: {duration: 1h}}
"""

ORCHESTRATOR = """
name: orchestrator
steps:
  long:
    action: workflow
    with: {workflow: sleeper}
"""

MISSING = """
name: missing-parent
steps:
  run:
    action: workflow
    with: {workflow: nowhere}
"""


async def _children_of(engine: Engine, workflow: str) -> list[dict[str, object]]:
    return await engine.ls(workflow=workflow)


async def test_a_parent_completes_with_its_childs_output(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(CHILD)
        await engine.deploy(PARENT)
        parent = await engine.start("parent", {"n": 21})
        shown = await engine.wait_done(parent)
        assert shown["status"] == "completed", shown
        assert shown["output"] == {"child": {"got": 21}}
        child_id = shown["steps"]["run"]["child"]
        assert child_id == f"{parent}=run"
        child = await engine.wait_done(child_id)
    assert child["status"] == "completed"
    assert child["parent"] == {"execution_id": parent, "step": "run"}


async def test_a_failing_child_fails_the_step_once_without_a_second_child(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FAILING_CHILD)
        await engine.deploy(RETRYING_PARENT)
        parent = await engine.start("retrying-parent")
        shown = await engine.wait_done(parent)
        children = await _children_of(engine, "failing-child")
    assert shown["status"] == "failed", shown
    step = shown["steps"]["run"]
    assert step["error_kind"] == "child_failed"
    assert f"{parent}=run failed" in step["error"]
    assert len(step["attempts"]) == 1  # the same child would answer a retry the same
    assert [c["execution_id"] for c in children] == [f"{parent}=run"]


async def test_a_child_that_cannot_start_fails_the_step_with_the_reason(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(MISSING)
        parent = await engine.start("missing-parent")
        shown = await engine.wait_done(parent)
    assert shown["status"] == "failed", shown
    assert shown["steps"]["run"]["error_kind"] == "child_not_started"
    assert "child workflow 'nowhere' not started" in shown["steps"]["run"]["error"]


async def test_a_child_with_invalid_input_fails_the_step(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(CHILD)
        await engine.deploy(PARENT.replace("{n: ", "{m: "))
        shown = await engine.wait_done(await engine.start("parent", {"n": 1}))
    assert shown["status"] == "failed", shown
    assert shown["steps"]["run"]["error_kind"] == "child_invalid_input"


async def test_for_each_over_children_keeps_to_its_concurrency(
    nats_server: EmbeddedServer,
) -> None:
    items = [{"name": f"e{i}", "n": i} for i in range(5)]
    async with running(nats_server) as engine:
        await engine.deploy(CHILD)
        await engine.deploy(FAN_OUT)
        parent = await engine.start("fan-out", {"items": items})
        shown = await engine.wait_done(parent)
        history = await engine.history(parent)
    assert shown["status"] == "completed", shown
    assert shown["output"] == [{"got": i} for i in range(5)]
    assert shown["steps"]["each[e3]"]["child"] == f"{parent}=each=e3"
    # never more than two children running at once, read from the parent's history
    running_now, most = 0, 0
    for event in history:
        if event["type"] == "step_scheduled":
            running_now += 1
        elif event["type"] in ("step_completed", "step_attempt_failed") and "[" in event["step"]:
            running_now -= 1
        most = max(most, running_now)
    assert most == 2


async def test_cancelling_the_parent_cancels_its_running_child(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(SLEEPER)
        await engine.deploy(ORCHESTRATOR)
        parent = await engine.start("orchestrator")
        child = f"{parent}=long"

        async def child_sleeps() -> None:
            shown = await engine.show(child)
            assert shown["steps"].get("nap", {}).get("status") == "waiting", shown

        await eventually(child_sleeps, within=10, ignoring=(Exception,))
        await engine.cancel(parent)
        assert (await engine.wait_done(parent))["status"] == "cancelled"
        shown = await engine.wait_done(child)
    assert shown["status"] == "cancelled", shown
    assert shown["error"] == f"parent {parent} cancelled"


async def test_starting_a_child_that_has_ended_answers_with_its_outcome(
    nats_server: EmbeddedServer,
) -> None:
    """A step started again for a child that ended already (a resume, a late redelivery)
    is answered from the child's history for that attempt: the parent never waits on
    a child that will not report again, and no second child starts."""
    async with running(nats_server) as engine:
        await engine.deploy(CHILD)
        await engine.deploy(PARENT)
        parent = await engine.start("parent", {"n": 7})
        assert (await engine.wait_done(parent))["status"] == "completed"
        js = engine.nc.jetstream()
        publisher = Publisher(engine.nc)
        starter = Starter(
            Definitions(js), publisher, IdempotencyKeys(js), partial(read_summary, js)
        )
        store = EventStore(engine.nc, js)

        async def load(execution: str) -> ExecutionState:
            return (await store.load(execution)).state

        children = Children(starter, publisher, load)
        probe = "probe-parent"  # its inbox is watched here: no actor has such an execution
        reports = await engine.nc.subscribe(inbox_subject(probe))
        again = StartChild(
            execution_id=probe,
            step="run",
            attempt=2,
            child=f"{parent}=run",
            workflow="child",
            input={"n": 7},
        )
        sent = await children.start(again)
        assert sent is not None
        await publisher.wait([sent])
        report = inbox_decoder.decode((await reports.next_msg(timeout=5)).data)
        await reports.unsubscribe()
        listed = await engine.ls(workflow="child")
    assert report == ChildEnded(
        step="run", child=f"{parent}=run", status="completed", output={"got": 7}, attempt=2
    )
    assert [c["execution_id"] for c in listed] == [f"{parent}=run"]
