"""The sync-orchestrator example end to end against a real nats-server: one entity-sync
child execution per entity, in dependency order (hard ``needs``, soft ``after``), with
a failing entity blocking only its dependants, one child per entity however often the
parent's step runs, cancel reaching the children, and an idempotency key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from natsflow.actors.examples import ENTITIES
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
NAMES = [entity["name"] for entity in ENTITIES]
NEEDS = {entity["name"]: entity["needs"] for entity in ENTITIES}
AFTER = {entity["name"]: entity["after"] for entity in ENTITIES}


async def deploy_examples(engine: Engine) -> None:
    await engine.deploy(EXAMPLES / "entity-sync.yaml")
    await engine.deploy(EXAMPLES / "sync-orchestrator.yaml")


def child_of(parent: str, entity: str) -> str:
    return f"{parent}=sync={entity}"


def positions(events: list[dict[str, Any]], kind: str) -> dict[str, int]:
    """Entity -> index in the parent's history of its item's first ``kind`` event."""
    found: dict[str, int] = {}
    for index, event in enumerate(events):
        step = event.get("step") or ""
        if event["type"] == kind and step.startswith("sync["):
            found.setdefault(step[len("sync[") : -1], index)
    return found


def ended_positions(events: list[dict[str, Any]]) -> dict[str, int]:
    """Entity -> index in the parent's history of the event that ended its item."""
    done = positions(events, "step_completed")
    for entity, index in positions(events, "step_attempt_failed").items():
        done.setdefault(entity, index)
    return done


async def entity_syncs(engine: Engine) -> list[str]:
    return sorted(row["execution_id"] for row in await engine.ls(workflow="entity-sync"))


async def test_every_entity_syncs_in_dependency_order(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await deploy_examples(engine)
        parent = await engine.start(
            "sync-orchestrator", {"organisation": "acme", "sync_type": "full"}
        )
        shown = await engine.wait_done(parent, timeout=60)
        events = await engine.history(parent)
        children = {name: await engine.show(child_of(parent, name)) for name in NAMES}
        listed = await entity_syncs(engine)

    assert shown["status"] == "completed", shown
    assert shown["output"]["organisation"] == "acme"
    pages = {e["name"]: e["pages"] for e in ENTITIES}
    assert shown["output"]["entities"] == [
        {"organisation": "acme", "entity": name, "pages": pages[name], "records": 3 * pages[name]}
        for name in NAMES
    ]
    assert listed == sorted(child_of(parent, name) for name in NAMES)
    for name, child in children.items():
        assert child["status"] == "completed", child
        assert child["parent"] == {"execution_id": parent, "step": f"sync[{name}]"}
        assert child["steps"]["page"]["iteration"] == pages[name] - 1  # one run per page
        assert shown["steps"][f"sync[{name}]"]["child"] == child_of(parent, name)

    # A child starts only after its hard and soft dependencies ended: read from the
    # order of the parent's history, and from the children's own start and end.
    scheduled, ended = positions(events, "step_scheduled"), ended_positions(events)
    for name in NAMES:
        for dep in (*NEEDS[name], *AFTER[name]):
            assert ended[dep] < scheduled[name], f"{name} started before {dep} ended"
            assert children[dep]["finished_at"] <= children[name]["started_at"]
    # and the independent ones did not wait for each other: campus and tag began together
    assert max(scheduled["campus"], scheduled["tag"]) < min(ended.values())


async def test_a_failing_entity_blocks_its_dependants_only(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await deploy_examples(engine)
        parent = await engine.start(
            "sync-orchestrator",
            {"organisation": "acme", "sync_type": "incremental", "fail": ["household"]},
        )
        shown = await engine.wait_done(parent, timeout=60)
        household = await engine.show(child_of(parent, "household"))
        listed = await entity_syncs(engine)

        # A retried parent step does not start a second child: resume the failed
        # orchestrator, so that its failed item runs again (attempt 2): it meets the
        # child it started before, which answers with how it ended.
        before = await engine.history(child_of(parent, "household"))
        await engine.client.resume(parent)

        async def ran_again() -> None:
            again = await engine.show(parent)
            assert again["status"] == "failed", again
            assert len(again["steps"]["sync[household]"]["attempts"]) == 2, again

        await eventually(ran_again, within=30)
        resumed = await engine.show(parent)
        after = await engine.history(child_of(parent, "household"))
        listed_again = await entity_syncs(engine)

    assert shown["status"] == "failed", shown
    steps = shown["steps"]
    # household failed, with its child's error; what needs it is blocked, saying why
    assert steps["sync[household]"]["status"] == "failed"
    assert steps["sync[household]"]["error_kind"] == "child_failed"
    assert "source failed" in steps["sync[household]"]["error"]
    assert household["status"] == "failed"
    assert len(household["steps"]["page"]["attempts"]) == 3  # the child's own retries
    for name in ("person", "address"):
        assert steps[f"sync[{name}]"]["status"] == "blocked", steps[f"sync[{name}]"]
        assert steps[f"sync[{name}]"]["reason"] == "household failed"
        assert steps[f"sync[{name}]"]["child"] is None
    # the independent entities, and note (only ordered after household), complete
    for name in ("campus", "tag", "note"):
        assert steps[f"sync[{name}]"]["status"] == "completed", steps[f"sync[{name}]"]
    assert steps["sync"]["status"] == "failed"
    assert "household" in steps["sync"]["error"]
    assert steps["report"]["status"] == "blocked"
    assert steps["report"]["reason"] == "sync failed"
    assert "household" in shown["error"]
    # no child for a blocked entity
    started = ["campus", "household", "tag", "note"]
    assert listed == sorted(child_of(parent, name) for name in started)

    # after the resume: the same children, the household child started once
    assert listed_again == listed
    assert [e["type"] for e in after].count("execution_started") == 1
    assert after == before
    household_step = resumed["steps"]["sync[household]"]
    assert household_step["child"] == child_of(parent, "household")
    assert [a["kind"] for a in household_step["attempts"]] == ["child_failed"] * 2


async def test_a_step_retried_until_its_child_starts_starts_one_child(
    nats_server: EmbeddedServer,
) -> None:
    """entity-sync not deployed yet: the items' first attempts fail (child_not_started,
    retried per the step's retry); once it is deployed, each retry starts its child,
    one per entity, with the id derived from the step."""
    async with running(nats_server) as engine:
        await engine.deploy(EXAMPLES / "sync-orchestrator.yaml")
        parent = await engine.start(
            "sync-orchestrator", {"organisation": "acme", "sync_type": "incremental"}
        )

        async def not_started() -> None:
            shown = await engine.show(parent)
            attempts = shown["steps"].get("sync[campus]", {}).get("attempts", [])
            assert attempts, shown
            assert {a["kind"] for a in attempts} == {"child_not_started"}, shown

        await eventually(not_started, within=20)
        await engine.deploy(EXAMPLES / "entity-sync.yaml")
        shown = await engine.wait_done(parent, timeout=60)
        listed = await entity_syncs(engine)
    assert shown["status"] == "completed", shown
    assert len(shown["steps"]["sync[campus]"]["attempts"]) >= 2
    assert listed == sorted(child_of(parent, name) for name in NAMES)


async def test_cancelling_the_orchestrator_cancels_its_running_children(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await deploy_examples(engine)
        # a thousand pages each: the first children are still paging when cancelled
        parent = await engine.start(
            "sync-orchestrator", {"organisation": "acme", "sync_type": "full", "pages": 1000}
        )
        first = [child_of(parent, "campus"), child_of(parent, "tag")]

        async def children_page() -> None:
            for child in first:
                shown = await engine.show(child)
                assert shown["status"] == "running", shown
                assert shown["steps"]["page"]["iteration"] >= 1, shown

        await eventually(children_page, within=30, ignoring=(Exception,))
        await engine.cancel(parent, "stop the sync")
        assert (await engine.wait_done(parent))["status"] == "cancelled"
        ended = [await engine.wait_done(child) for child in first]
        listed = await entity_syncs(engine)

    for shown in ended:
        assert shown["status"] == "cancelled", shown
        assert shown["error"] == f"parent {parent} cancelled"
    assert listed == sorted(first)  # nothing else was started


async def test_the_same_organisation_and_sync_type_start_one_execution(
    nats_server: EmbeddedServer,
) -> None:
    acme = {"organisation": "acme", "sync_type": "incremental"}
    async with running(nats_server) as engine:
        await deploy_examples(engine)
        first = await engine.start_full("sync-orchestrator", acme)
        second = await engine.start_full("sync-orchestrator", acme)
        other = await engine.start_full("sync-orchestrator", {**acme, "sync_type": "full"})
        assert (await engine.wait_done(first["execution_id"], timeout=60))["status"] == "completed"
        third = await engine.start_full("sync-orchestrator", acme)  # after it ended, too
        await engine.wait_done(other["execution_id"], timeout=60)
    assert first["created"] is True
    assert (second["created"], third["created"]) == (False, False)
    assert second["execution_id"] == third["execution_id"] == first["execution_id"]
    assert other["created"] is True
    assert other["execution_id"] != first["execution_id"]
