"""``natsflow.testing.WorkflowTestEnv`` against its own embedded nats-server: a workflow
that sleeps an hour finishes once the test skips the hour; the code orchestrator with
10-minute pauses between pages finishes with ``skip_timers``; a recorded history
checks against the code that made it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from examples.code import sync_docs, sync_orchestrator
from natsflow import sleep, step, workflow
from natsflow.code import CodeApp
from natsflow.testing import WorkflowTestEnv, check_history


@step
def stamp(text: str) -> str:
    return f"stamped {text}"


@workflow(name="nap")
async def nap(order: dict[str, str]) -> str:
    await sleep(3600)  # an hour, on the test's skippable clock
    return await stamp(order["text"])


NAP = CodeApp("naps", {"nap": nap}, {"stamp": stamp})


async def test_skip_fires_the_timers_due_within_the_skipped_time() -> None:
    async with WorkflowTestEnv(app=NAP) as env:
        execution = await env.start("nap", {"text": "hi"})
        [timer] = await env.wait_for_timer(execution)
        assert (timer.purpose, timer.execution) == ("sleep", execution)
        assert await env.skip(timedelta(minutes=5)) == []  # not due yet
        fired = await env.skip(timedelta(hours=1))
        output = await env.result(execution)
        assert await env.timers() == []
    assert [t.timer_id for t in fired] == [timer.timer_id]
    assert output == "stamped hi"


async def test_result_can_skip_every_sleep_of_an_execution_and_its_children() -> None:
    order = {"organisation": "acme", "sync_type": "full", "pause": 600}  # 10 min per page
    async with WorkflowTestEnv(app=sync_orchestrator) as env:
        execution = await env.start("sync_orchestrator", order)
        output = await env.result(execution, within=60, skip_timers=True)
    assert set(output["entities"]) == {"campus", "household", "person", "address", "tag", "note"}
    assert output["entities"]["household"]["pages"] == 3


async def test_a_history_read_from_the_env_checks_against_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATSFLOW_SANDBOXES", str(tmp_path))
    async with WorkflowTestEnv(app=sync_docs) as env:
        execution = await env.start("sync_docs", {"repo": "acme/docs", "sources": ["a.md"]})
        await env.result(execution)
        history = await env.client.history(execution)
    checked = check_history(msgspec.json.encode(history), sync_docs)
    assert (checked.execution, checked.status, checked.calls) == (execution, "completed", 4)
