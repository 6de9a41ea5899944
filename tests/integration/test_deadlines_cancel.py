"""Deadlines the engine keeps, and a cancel that reaches the running code (real nats-server)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.jetstream.topology import TASKS_STREAM, WORKERS_CONSUMER
from natsflow.events.messages import Progress, Result, Task, json_encoder
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running

TIMED = """
name: timed
steps:
  call:
    action: noop
    timeout: 1s
    retry: {attempts: 2, backoff: fixed, delay: 100ms}
output: "${{ steps.call.output }}"
"""

BEATING = """
name: beating
steps:
  call:
    action: noop
    heartbeat: 1s
"""


async def take_task(js: JetStreamContext, expect_attempt: int) -> Task:
    """A fake worker in another language: a plain pull from the workers' consumer, acked."""
    sub = await js.pull_subscribe_bind(durable=WORKERS_CONSUMER, stream=TASKS_STREAM)
    try:

        async def pulled() -> Task:
            msgs = await sub.fetch(1, timeout=1)
            await msgs[0].ack()
            return msgspec.json.decode(msgs[0].data, type=Task)

        task = await eventually(pulled, within=15, ignoring=(TimeoutError,))
    finally:
        await sub.unsubscribe()
    assert task.attempt == expect_attempt
    return task


async def test_an_acked_task_never_answered_times_out_on_the_engines_deadline_and_the_retry_completes(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(TIMED)
        execution = await engine.start("timed")
        first = await take_task(js, 1)
        assert first.timeout == 1.0  # the worker was told; it does nothing about it
        second = await take_task(js, 2)  # after the engine's deadline (1 s + 1 s grace)
        answer = Result(step="call", attempt=2, ok=True, output={"answered": 2})
        await js.publish(second.reply_to, json_encoder.encode(answer))
        done = await engine.wait_done(execution)
        assert (done["status"], done["output"]) == ("completed", {"answered": 2})
        attempts = done["steps"]["call"]["attempts"]
        assert [a["kind"] for a in attempts] == ["timeout", None]
        assert "engine's deadline" in attempts[0]["error"]
        # the first attempt's answer, arriving now, is stale: nothing changes
        late = Result(step="call", attempt=1, ok=True, output={"answered": 1})
        await js.publish(first.reply_to, json_encoder.encode(late))
        kinds = [e["type"] for e in await engine.history(execution)]
        assert kinds.count("step_deadline_set") == 2
        assert (await engine.show(execution))["output"] == {"answered": 2}


async def test_a_worker_that_stops_reporting_fails_its_heartbeat(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(BEATING)
        execution = await engine.start("beating")
        task = await take_task(js, 1)
        beat = Progress(step="call", attempt=1, message="still here")
        await js.publish(task.reply_to, json_encoder.encode(beat))
        done = await engine.wait_done(execution)  # then silence
        assert done["status"] == "failed"
        step = done["steps"]["call"]
        assert (step["status"], step["error_kind"]) == ("failed", "heartbeat")
        assert step["progress"] == "still here"


def shell_manifest(pidfile: Path, ignore_term: bool) -> str:
    trap = "trap '' TERM; " if ignore_term else ""
    script = f"{trap}echo $$ > {pidfile}; sleep 60; echo done"
    return f"""
name: long
steps:
  work:
    action: shell
    with: {{argv: [sh, -c, "{script}"]}}
"""


async def gone(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"process {pid} still runs")


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
async def test_cancel_stops_a_long_shell_step_within_the_grace_period(
    nats_server: EmbeddedServer, tmp_path: Path, ignore_term: bool
) -> None:
    grace = 1.0
    pidfile = tmp_path / "pid"
    async with running(nats_server, cancel_grace=grace) as engine:
        await engine.deploy(shell_manifest(pidfile, ignore_term))
        execution = await engine.start("long")

        async def started() -> int:  # the script wrote its pid
            return int(pidfile.read_text().strip())

        pid = await eventually(started, within=15, ignoring=(FileNotFoundError, ValueError))
        os.kill(pid, 0)  # running
        await engine.cancel(execution, "operator")
        await eventually(lambda: gone(pid), within=grace + 2)
        done = await engine.wait_done(execution)
        assert done["status"] == "cancelled"
        step = done["steps"]["work"]
        assert step["status"] == "cancelled"
        assert step["attempts"][-1]["kind"] == "cancelled"
