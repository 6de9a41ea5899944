"""The code-workflow examples (``examples/code``) against a real nats-server: sync_docs
(and the error when a step returns its live sandbox), and the sync orchestrator as
code (dependency order, a failed entity blocking its hard dependants, one execution
per organisation and sync type)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import natsflow
from examples.code import sync_docs, sync_orchestrator
from natsflow import step, workflow
from natsflow.code import CodeApp, load_app
from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running


@pytest.fixture(autouse=True)
def sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sandboxes"
    monkeypatch.setenv("NATSFLOW_SANDBOXES", str(root))
    return root


async def test_sync_docs_completes(nats_server: EmbeddedServer, sandboxes: Path) -> None:
    order = {"repo": "acme/docs", "sources": ["intro.md", "api.md", "faq.md"]}
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=sync_docs, ack_wait=2.0),
    ):
        execution = await engine.start("sync_docs", order)
        done = await engine.wait_done(execution, timeout=30)
    assert execution.startswith("docs==sync_docs-")
    assert done["status"] == "completed", done
    output = done["output"]
    assert (output["repo"], output["files"]) == ("acme/docs", 3)
    assert len(output["commit"]) == 12
    for key in ("create_sandbox#0", "sync_sources#1", "push#2", "snapshot#3"):
        assert done["steps"][key]["status"] == "completed", (key, done)
    assert (sandboxes / f"{output['snapshot']}.tar.gz").is_file()
    assert not (sandboxes / output["snapshot"]).exists()  # the sandbox went with its snapshot


@step(name="create_sandbox")
def create_leaky_sandbox(name: str) -> sync_docs.Sandbox:
    box = sync_docs.Sandbox.create(name)
    box.close()  # (no file left open by the test; the type is what cannot be stored)
    return box


@workflow(name="sync_docs")
async def leaky_sync_docs(order: sync_docs.SyncOrder) -> dict[str, Any]:
    box = await create_leaky_sandbox("leaky")
    return {"box": str(box)}


async def test_a_step_returning_the_sandbox_fails_naming_workflow_step_and_type(
    nats_server: EmbeddedServer,
) -> None:
    leaky = CodeApp(
        "docs", {"sync_docs": leaky_sync_docs}, {"create_sandbox": create_leaky_sandbox}
    )
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=leaky, ack_wait=2.0),
    ):
        execution = await engine.start("sync_docs", {"repo": "acme/docs", "sources": []})
        done = await engine.wait_done(execution, timeout=30)
    assert done["status"] == "failed", done
    expected = (
        "step create_sandbox of workflow sync_docs returned a Sandbox, which cannot be stored:"
        " return JSON values, a msgspec Struct or a dataclass"
    )
    assert expected in done["error"], done
    step = done["steps"]["create_sandbox#0"]
    assert step["status"] == "failed"
    assert step["attempts"][-1]["kind"] == "not_storable", step


ENTITIES = ("campus", "household", "person", "address", "tag", "note")


async def test_the_code_orchestrator_syncs_every_entity_in_dependency_order(
    nats_server: EmbeddedServer,
) -> None:
    order = {"organisation": "acme", "sync_type": "full", "pause": 0.05}
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=sync_orchestrator, ack_wait=2.0),
    ):
        execution = await engine.start("sync_orchestrator", order)
        done = await engine.wait_done(execution, timeout=60)
        children = {row["execution_id"]: row for row in await engine.ls(parent=execution)}
        shown = {child: await engine.show(child) for child in children}
    assert done["status"] == "completed", done
    entities = done["output"]["entities"]
    assert set(entities) == set(ENTITIES)
    assert entities["household"] == {
        "organisation": "acme",
        "entity": "household",
        "pages": 3,
        "records": 9,
    }
    assert len(children) == len(ENTITIES)
    ended = {s["input"]["entity"]: (s["started_at"], s["finished_at"]) for s in shown.values()}
    for entity, needs in (
        ("household", "campus"),
        ("person", "household"),
        ("person", "tag"),
        ("address", "household"),
        ("note", "person"),
        ("note", "household"),
    ):
        assert ended[needs][1] <= ended[entity][0], (entity, needs, ended)
    household = next(s for s in shown.values() if s["input"]["entity"] == "household")
    sleeps = [k for k in household["steps"] if k.startswith("~sleep#")]
    assert len(sleeps) == 2, household["steps"]  # 3 pages, a durable sleep between each


async def test_a_failing_entity_blocks_its_hard_dependants(nats_server: EmbeddedServer) -> None:
    order = {
        "organisation": "acme",
        "sync_type": "incremental",
        "fail": ["household"],
        "pause": 0.05,
    }
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=sync_orchestrator, ack_wait=2.0),
    ):
        execution = await engine.start("sync_orchestrator", order)
        done = await engine.wait_done(execution, timeout=60)
        children = [
            await engine.show(row["execution_id"]) for row in await engine.ls(parent=execution)
        ]
    assert done["status"] == "failed", done
    error = done["error"]
    assert "3 of 6 entities did not sync" in error, error
    assert "household failed: " in error, error
    assert "person blocked: household did not complete" in error, error
    assert "address blocked: household did not complete" in error, error
    statuses = {child["input"]["entity"]: child["status"] for child in children}
    # person and address never started; note (only after household) still ran
    assert statuses == {
        "campus": "completed",
        "household": "failed",
        "tag": "completed",
        "note": "completed",
    }


async def test_the_same_organisation_and_sync_type_start_one_execution(
    nats_server: EmbeddedServer,
) -> None:
    order = {"organisation": "acme", "sync_type": "incremental", "pause": 0.05}
    async with (
        running(nats_server) as engine,
        natsflow.Worker(nats_server.url, app=sync_orchestrator, ack_wait=2.0),
    ):
        first = await engine.start_full("sync_orchestrator", order)
        second = await engine.start_full("sync_orchestrator", order)
        other = await engine.start_full("sync_orchestrator", {**order, "organisation": "globex"})
        done = await engine.wait_done(first["execution_id"], timeout=60)
        rows = await engine.ls(workflow="sync_orchestrator")
    assert first["created"]
    assert not second["created"]
    assert second["execution_id"] == first["execution_id"]
    assert other["created"]
    assert other["execution_id"] != first["execution_id"]
    assert done["status"] == "completed", done
    assert len(rows) == 2


def test_the_examples_load_as_apps() -> None:
    assert load_app([sync_docs]).name == "docs"
    assert sorted(load_app([sync_orchestrator]).workflows) == ["entity_sync", "sync_orchestrator"]
