"""The whole engine in-process against a real nats-server: manifests run end to end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from nats.aio.client import Client

from natsflow.actors.jetstream.topology import INBOX_STREAM
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import running

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

BRANCH = (
    "import json,time; s=time.time(); time.sleep(0.5);"
    " print(json.dumps({'start': s, 'end': time.time()}))"
)
OVERLAP = f"""
name: overlap
steps:
  fetch:
    action: noop
    with: {{source: test}}
  left:
    action: shell
    needs: [fetch]
    with: {{argv: [python3, -c, "{BRANCH}"]}}
  right:
    action: shell
    needs: [fetch]
    with: {{argv: [python3, -c, "{BRANCH}"]}}
  join:
    action: noop
    needs: [left, right]
    with:
      left: "${{{{ steps.left.output }}}}"
      right: "${{{{ steps.right.output }}}}"
output: "${{{{ steps.join.output }}}}"
"""

FLAKY = """
name: flaky
steps:
  flaky:
    action: python
    with: {function: flaky_third_time}
    retry: {attempts: 3, backoff: exponential, delay: 200ms, max_delay: 2s}
output: "${{ steps.flaky.output }}"
"""

BROKEN = """
name: broken
steps:
  first:
    action: noop
  boom:
    action: python
    needs: [first]
    with: {function: always_fails}
    retry: {attempts: 2, backoff: fixed, delay: 50ms}
  after_boom:
    action: noop
    needs: [boom]
"""

CONTINUE = """
name: tolerant
steps:
  boom:
    action: python
    with: {function: always_fails}
    on_failure: continue
  hard:
    action: noop
    needs: [boom]
  deeper:
    action: noop
    needs: [hard]
  soft:
    action: noop
    after: [boom]
    with: {ran: true}
  independent:
    action: noop
    with: {ran: true}
output:
  soft: "${{ steps.soft.output }}"
  independent: "${{ steps.independent.output }}"
"""

ITEMS = [
    {"name": "comments", "depends_on": ["tasks", "users"]},
    {"name": "tasks", "depends_on": ["projects", "tags"]},
    {"name": "projects", "depends_on": ["teams"]},
    {"name": "teams", "depends_on": ["users"]},
    {"name": "users", "depends_on": []},
    {"name": "tags", "depends_on": []},
]
FAN_OUT = """
name: fanout
steps:
  sync:
    action: noop
    for_each:
      items: "${{ input.items }}"
      key: "${{ item.name }}"
      needs: "${{ item.depends_on }}"
    with: {synced: "${{ item.name }}"}
output: "${{ steps.sync.output }}"
"""

SLEEPY = """
name: sleepy
steps:
  nap:
    action: sleep
    with: {duration: 1s}
  after_nap:
    action: noop
    needs: [nap]
    with: {woke: true}
output: "${{ steps.after_nap.output }}"
"""

LONG_NAP = """
name: long-nap
steps:
  nap:
    action: sleep
    with: {duration: 1h}
  never:
    action: noop
    needs: [nap]
"""

ONCE = """
name: once
idempotency_key: "${{ input.order }}"
steps:
  a:
    action: noop
"""

# Each step appends its idempotency key (execution:step:attempt) to the file in input.path.
RECORD = """
    action: shell
    with:
      argv: [sh, -c, 'echo "$NATSFLOW_IDEMPOTENCY_KEY" >> "$0"', "${{ input.path }}"]"""
RECORDED = f"""
name: recorded
steps:
  a:{RECORD}
  b:{RECORD}
    needs: [a]
  c:{RECORD}
    needs: [a]
  d:{RECORD}
    needs: [b, c]
"""


def by_type(events: list[dict[str, Any]], kind: str, step: str | None = None) -> list[int]:
    """Positions (in history order) of the events of one type, for one step if given."""
    return [
        i
        for i, e in enumerate(events)
        if e["type"] == kind and (step is None or e.get("step") == step)
    ]


async def test_hello_completes_with_its_output(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        deployed = await engine.deploy(EXAMPLES / "hello.yaml")
        assert deployed["workflow"] == "hello"
        execution = await engine.start("hello", {"name": "Ada"})
        shown = await engine.wait_done(execution)
    assert shown["status"] == "completed", shown
    assert shown["output"] == {"greeting": "Hello, Ada!"}
    assert shown["steps_done"] == shown["steps_total"] == 1
    assert shown["steps"]["greet"]["status"] == "completed"
    assert len(shown["steps"]["greet"]["attempts"]) == 1


async def test_dag_runs_in_dependency_order_and_branches_overlap(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(OVERLAP)
        execution = await engine.start("overlap", {})
        shown = await engine.wait_done(execution)
        events = await engine.history(execution)
    assert shown["status"] == "completed", shown
    steps = shown["steps"]
    left, right = shown["output"]["left"], shown["output"]["right"]
    # The two shell processes really ran at the same time.
    assert max(left["start"], right["start"]) < min(left["end"], right["end"])
    # Both branches were dispatched before either completed...
    scheduled = by_type(events, "step_scheduled", "left") + by_type(
        events, "step_scheduled", "right"
    )
    completed = by_type(events, "step_completed", "left") + by_type(
        events, "step_completed", "right"
    )
    assert max(scheduled) < min(completed)
    assert max(steps[b]["started_at"] for b in ("left", "right")) < min(
        steps[b]["finished_at"] for b in ("left", "right")
    )
    # ...after fetch, and join only after both finished.
    assert by_type(events, "step_completed", "fetch")[0] < min(scheduled)
    assert max(completed) < by_type(events, "step_scheduled", "join")[0]
    assert steps["join"]["started_at"] >= max(steps[b]["finished_at"] for b in ("left", "right"))


async def test_example_dag_completes(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(EXAMPLES / "dag.yaml")
        shown = await engine.wait_done(await engine.start("dag", {}))
    assert shown["status"] == "completed", shown
    assert shown["output"]["left"] == {"branch": "left", "source": "example"}
    assert shown["output"]["flaky"] == {"attempt": 3, "ok": True}


async def test_flaky_step_retries_with_exponential_backoff(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FLAKY)
        shown = await engine.wait_done(await engine.start("flaky", {}))
    assert shown["status"] == "completed", shown
    assert shown["output"] == {"attempt": 3, "ok": True}
    attempts = shown["steps"]["flaky"]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["error"] for a in attempts[:2]] == [
        "flaky: attempt 1 failed on purpose",
        "flaky: attempt 2 failed on purpose",
    ]
    assert attempts[2]["error"] is None
    # delay 200ms, multiplier 2: the retry timers wait at least 0.2 s, then 0.4 s.
    assert attempts[1]["started_at"] - attempts[0]["finished_at"] >= 0.2
    assert attempts[2]["started_at"] - attempts[1]["finished_at"] >= 0.4


async def test_exhausted_retries_fail_the_execution_naming_the_step(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(BROKEN)
        shown = await engine.wait_done(await engine.start("broken", {}))
    assert shown["status"] == "failed", shown
    assert shown["failed_step"] == "boom"
    assert "boom" in shown["error"]
    assert "always_fails: attempt 2" in shown["error"]
    boom = shown["steps"]["boom"]
    assert boom["status"] == "failed"
    assert boom["error"] == "always_fails: attempt 2"
    assert [a["error"] for a in boom["attempts"]] == [
        "always_fails: attempt 1",
        "always_fails: attempt 2",
    ]
    assert shown["steps"]["first"]["status"] == "completed"
    # never reached, and never to run: blocked, naming the step that failed
    assert (shown["steps"]["after_boom"]["status"], shown["steps"]["after_boom"]["reason"]) == (
        "blocked",
        "boom failed",
    )


async def test_on_failure_continue_skips_hard_dependents_only(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(CONTINUE)
        shown = await engine.wait_done(await engine.start("tolerant", {}))
    assert shown["status"] == "completed", shown
    statuses = {name: step["status"] for name, step in shown["steps"].items()}
    assert statuses == {
        "boom": "failed",
        "hard": "blocked",
        "deeper": "blocked",
        "soft": "completed",
        "independent": "completed",
    }
    assert "boom" in shown["steps"]["hard"]["error"]
    assert shown["steps"]["hard"]["reason"] == "boom failed"
    assert shown["steps"]["deeper"]["reason"] == "boom failed (via hard)"
    assert shown["output"] == {"soft": {"ran": True}, "independent": {"ran": True}}


async def test_for_each_runs_items_in_dependency_order(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FAN_OUT)
        execution = await engine.start("fanout", {"items": ITEMS})
        shown = await engine.wait_done(execution)
        events = await engine.history(execution)
    assert shown["status"] == "completed", shown
    assert shown["output"] == [{"synced": item["name"]} for item in ITEMS]
    for item in ITEMS:
        key = f"sync[{item['name']}]"
        (started,) = by_type(events, "step_scheduled", key)
        for dep in item["depends_on"]:
            (dep_done,) = by_type(events, "step_completed", f"sync[{dep}]")
            assert dep_done < started, f"{key} started before {dep} completed"
    # Items without dependencies did not wait for anything.
    first_wave = {events[i]["step"] for i in by_type(events, "step_scheduled")[:2]}
    assert first_wave == {"sync[users]", "sync[tags]"}


async def test_durable_sleep_completes_after_its_duration(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(SLEEPY)
        execution = await engine.start("sleepy", {})
        shown = await engine.wait_done(execution)
        events = await engine.history(execution)
    assert shown["status"] == "completed", shown
    assert shown["output"] == {"woke": True}
    nap = shown["steps"]["nap"]
    assert nap["finished_at"] - nap["started_at"] >= 1.0
    (started,) = by_type(events, "timer_started", "nap")
    (fired,) = by_type(events, "timer_fired", "nap")
    assert events[started]["purpose"] == "sleep"
    assert started < fired < by_type(events, "step_completed", "nap")[0]


async def test_idempotency_key_starts_one_execution(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ONCE)
        first = await engine.start_full("once", {"order": 1}, key="order-1")
        again = await engine.start_full("once", {"order": 1}, key="order-1")
        # The manifest's idempotency_key template gives the same protection without a key.
        templated = await engine.start_full("once", {"order": 2})
        templated_again = await engine.start_full("once", {"order": 2})
        for result in (first, templated):
            await engine.wait_done(result["execution_id"])
        rows = await engine.ls(workflow="once")
    assert first["created"] is True
    assert again["created"] is False
    assert again["execution_id"] == first["execution_id"]
    assert templated["created"] is True
    assert templated_again["created"] is False
    assert templated_again["execution_id"] == templated["execution_id"]
    assert templated["execution_id"] != first["execution_id"]
    assert sorted(r["execution_id"] for r in rows) == sorted(
        [first["execution_id"], templated["execution_id"]]
    )


async def test_cancel_ends_a_running_execution(nats_server: EmbeddedServer, nc: Client) -> None:
    js = nc.jetstream()

    async def timers() -> int:
        info = await js.stream_info(INBOX_STREAM, subjects_filter=f"natsflow.sched.{execution}.*")
        return sum((info.state.subjects or {}).values())

    async with running(nats_server) as engine:
        await engine.deploy(LONG_NAP)
        execution = await engine.start("long-nap", {})
        running_state = await engine.wait_for(execution, ("running",), timeout=10)
        assert running_state["steps"]["nap"]["status"] == "waiting"
        assert await timers() == 1
        answer = await engine.cancel(execution, "no longer needed")
        assert answer == {"execution_id": execution, "cancel_requested": True}
        shown = await engine.wait_done(execution, timeout=10)

        # The nap's timer is purged: it will never wake the ended execution.
        async def purged() -> None:
            assert await timers() == 0

        await eventually(purged, within=10)
    assert shown["status"] == "cancelled", shown
    assert shown["error"] == "no longer needed"
    never = shown["steps"]["never"]
    assert (never["status"], never["reason"]) == (
        "not_run",
        "the execution was cancelled before it began",
    )


async def test_micro_service_answers_ping_and_info(nats_server: EmbeddedServer, nc: Client) -> None:
    async with running(nats_server):
        ping = orjson.loads((await nc.request("$SRV.PING.natsflow", b"", timeout=5)).data)
        info = orjson.loads((await nc.request("$SRV.INFO.natsflow", b"", timeout=5)).data)
        stats = orjson.loads((await nc.request("$SRV.STATS.natsflow", b"", timeout=5)).data)
    assert ping["name"] == "natsflow"
    assert ping["type"] == "io.nats.micro.v1.ping_response"
    assert info["name"] == "natsflow"
    subjects = {e["subject"] for e in info["endpoints"]}
    assert {"natsflow.api.start", "natsflow.api.show", "natsflow.api.deploy"} <= subjects
    assert stats["name"] == "natsflow"


async def test_http_sidecar(nats_server: EmbeddedServer) -> None:
    port = free_port()  # http_port=0 turns HTTP off, so pick one
    base = f"http://127.0.0.1:{port}"
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        await engine.deploy(EXAMPLES / "hello.yaml")
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"ready": True}
        url = f"{base}/v1/workflows/hello/executions"
        async with http.post(url, json={"input": {"name": "Bob"}}) as resp:
            assert resp.status == 201
            started = await resp.json()
        execution = started["execution_id"]
        await engine.wait_done(execution)
        async with http.get(f"{base}/v1/executions/{execution}") as resp:
            assert resp.status == 200
            shown = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            metrics = await resp.text()
    assert shown["status"] == "completed"
    assert shown["output"] == {"greeting": "Hello, Bob!"}
    assert 'natsflow_steps_dispatched_total{action="shell"} 1.0' in metrics
    assert 'natsflow_executions_finished_total{status="completed",workflow="hello"}' in metrics


async def test_two_instances_run_each_step_exactly_once(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    record = tmp_path / "steps.log"
    record.touch()
    async with running(nats_server, instances=2, actor_idle_timeout=0.2) as engine:
        await engine.deploy(RECORDED)
        executions = [
            await engine.start("recorded", {"path": str(record)}, key=f"order-{n}")
            for n in range(12)
        ]
        shown = [await engine.wait_done(execution) for execution in executions]
    assert [s["status"] for s in shown] == ["completed"] * len(executions)
    lines = record.read_text().splitlines()
    runs = Counter(tuple(line.rsplit(":", 1)[0].rsplit(":", 1)) for line in lines)
    expected = {(e, step) for e in executions for step in "abcd"}
    assert set(runs) == expected
    assert [k for k, n in runs.items() if n != 1] == []
