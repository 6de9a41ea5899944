"""The open contract against a real nats-server: every message natsflow sends or accepts
matches its shipped JSON Schema, the event feed tells every event, and an invalid
result fails its attempt (retried per policy) instead of leaving the step waiting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.topology import DLQ_STREAM, TASKS_STREAM, WORKERS_CONSUMER
from natsflow.events.messages import Result, Task, json_encoder
from natsflow.events.replies import REPLY_TO_HEADER
from natsflow.service.embedded import EmbeddedServer
from tests.contract import Recorder, check
from tests.eventually import eventually
from tests.integration.harness import Engine, running

RETRIED = """
name: retried
steps:
  charge:
    action: noop
    retry: {attempts: ATTEMPTS, backoff: fixed, delay: 100ms}
output: "${{ steps.charge.output }}"
"""

# Every kind of message in one run: a task, progress and a result from natsflow's own
# worker, a signal, the feed; a trigger (its reply) and a cancel (its notice) below.
TOURED = """
name: toured
triggers:
  - subject: "tour.*.begin"
steps:
  report:
    action: shell
    with: {argv: [sh, -c, "echo '[PROGRESS] half way'; echo '{\\"done\\": true}'"]}
  approve:
    action: wait
    needs: [report]
    with: {signal: approve}
    timeout: 60s
  linger:
    action: shell
    needs: [approve]
    with: {argv: [sh, -c, "echo '[PROGRESS] lingering'; sleep 60"]}
"""


@asynccontextmanager
async def retried(nats_server: EmbeddedServer, attempts: int) -> AsyncIterator[tuple[Engine, str]]:
    """The service with no worker of its own (the test answers its tasks) and an execution
    of ``retried`` (``attempts`` attempts) started."""
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(RETRIED.replace("ATTEMPTS", str(attempts)))
        yield engine, await engine.start("retried")


async def take_task(js: JetStreamContext, attempt: int) -> Task:
    """A worker in another language: a plain pull from the workers' consumer, acked."""
    sub = await js.pull_subscribe_bind(durable=WORKERS_CONSUMER, stream=TASKS_STREAM)
    try:

        async def pulled() -> Task:
            msgs = await sub.fetch(1, timeout=1)
            await msgs[0].ack()
            check("task", msgs[0].data)
            return msgspec.json.decode(msgs[0].data, type=Task)

        task = await eventually(pulled, within=15, ignoring=(TimeoutError,))
    finally:
        await sub.unsubscribe()
    assert task.attempt == attempt
    return task


async def refused(nc: Client, subject: str, body: bytes) -> dict[str, object]:
    """Publish ``body`` to ``subject`` (JetStream) asking for the answer on an inbox."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    await nc.jetstream().publish(subject, body, headers={REPLY_TO_HEADER: inbox})
    msg = await sub.next_msg(timeout=10)
    answer: dict[str, object] = check("refusal", msg.data)
    return answer


async def test_an_invalid_result_fails_its_attempt_and_the_retry_completes(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with retried(nats_server, attempts=2) as (engine, execution):
        first = await take_task(js, 1)
        # ``ok`` missing, ``error`` a string: the worker is told, naming the field
        bad = {"kind": "result", "step": "charge", "attempt": 1, "error": "card declined"}
        answer = await refused(nc, first.reply_to, json.dumps(bad).encode())
        assert answer["outcome"] == "attempt_failed"
        assert (answer["step"], answer["attempt"]) == ("charge", 1)
        assert "$.error" in str(answer["error"])  # the decoder names the first it meets

        second = await take_task(js, 2)  # retried per policy, not waiting forever
        good = Result(step="charge", attempt=2, ok=True, output={"charged": 3})
        check("result", json_encoder.encode(good))
        await js.publish(second.reply_to, json_encoder.encode(good))
        done = await engine.wait_done(execution)
    assert (done["status"], done["output"]) == ("completed", {"charged": 3})
    failed = done["steps"]["charge"]["attempts"][0]
    assert failed["kind"] == "invalid_result"
    assert "invalid result" in failed["error"]
    assert "$.error" in failed["error"]


async def test_an_invalid_result_with_no_retry_left_fails_the_execution(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with retried(nats_server, attempts=1) as (engine, execution):
        task = await take_task(js, 1)
        bad = b'{"kind": "result", "step": "charge", "attempt": 1, "ok": true, "error": 7}'
        await js.publish(task.reply_to, bad)
        done = await engine.wait_done(execution)
    assert done["status"] == "failed"
    step = done["steps"]["charge"]
    assert (step["status"], step["error_kind"]) == ("failed", "invalid_result")
    assert "$.error" in step["error"]


async def test_a_result_naming_no_attempt_is_dead_lettered_and_its_sender_told(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with retried(nats_server, attempts=1) as (engine, execution):
        task = await take_task(js, 1)
        bad = b'{"kind": "result", "step": "charge", "attempt": "first", "ok": true}'
        answer = await refused(nc, task.reply_to, bad)
        assert answer["outcome"] == "dead_lettered"
        assert "$.attempt" in str(answer["error"])
        letter = await js.get_msg(DLQ_STREAM, int(str(answer["dead_letter"])))
        assert letter.data == bad
        assert "$.attempt" in (letter.headers or {})["Natsflow-Error"]
        # the step still waits for a real answer
        await js.publish(
            task.reply_to, json_encoder.encode(Result(step="charge", attempt=1, ok=True))
        )
        assert (await engine.wait_done(execution))["status"] == "completed"


async def test_every_message_of_a_run_matches_its_schema_and_the_feed_tells_every_event(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    recorder = Recorder()
    async with running(nats_server) as engine:
        await engine.deploy(TOURED)
        reply_inbox = nc.new_inbox()
        await recorder.start(nc, (reply_inbox, "trigger-reply"))
        try:
            reply = await engine.client.trigger("tour.1.begin", {"who": "ada"})
            assert reply.execution_id is not None
            execution = reply.execution_id
            await engine.wait_for(execution, ("running",), 10)

            async def waiting() -> None:
                assert (await engine.show(execution))["steps"]["approve"]["status"] == "waiting"

            await eventually(waiting, within=15)
            await engine.client.signal(execution, "approve", {"by": "ada"})

            async def lingering() -> None:
                step = (await engine.show(execution))["steps"]["linger"]
                assert step["progress"] == "lingering", step  # it runs: cancel stops it

            await eventually(lingering, within=15)
            await engine.cancel(execution)
            await engine.wait_done(execution)
            history = await engine.history(execution)

            async def all_told() -> None:
                assert len(recorder.heard["feed"]) == len(history)

            await eventually(all_told, within=10)
        finally:
            await recorder.stop()
    recorder.assert_valid()
    for kind in ("task", "progress", "result", "signal", "feed", "cancel-notice"):
        assert recorder.heard[kind], f"no {kind} message heard"
    # the trigger's reply went to the client's own inbox: checked by its own decoder; one
    # sent to ours is checked here
    assert [e["type"] for e in history] == [m["event"]["type"] for m in recorder.heard["feed"]]
    told = recorder.heard["feed"]
    assert {(m["workflow"], m["execution_id"]) for m in told} == {("toured", execution)}
    assert [(m["sequence"], m["index"]) for m in told] == sorted(
        (m["sequence"], m["index"]) for m in told
    )
    assert told[-1]["event"]["type"] == "execution_cancelled"
    assert recorder.heard["progress"][0]["message"] == "half way"


async def test_a_trigger_reply_matches_its_schema(nats_server: EmbeddedServer, nc: Client) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(TOURED)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=2)
        js = nc.jetstream()
        await js.publish("tour.2.begin", b'{"who": "bob"}', headers={REPLY_TO_HEADER: inbox})
        started = check("trigger-reply", (await sub.next_msg(timeout=10)).data)
        assert started["workflow"] == "toured"
        assert started["execution_id"]
        await js.publish("tour.3.begin", b"not json", headers={REPLY_TO_HEADER: inbox})
        refusal = check("trigger-reply", (await sub.next_msg(timeout=10)).data)
        assert refusal["error"]
        assert refusal["dead_letter"] >= 1
        await engine.cancel(started["execution_id"])


async def test_a_team_reacts_to_execution_completed_without_polling(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    hello = Path(__file__).parents[2] / "manifests" / "examples" / "hello.yaml"
    ended = await nc.subscribe("natsflow.feed.hello.*.execution_completed", max_msgs=1)
    async with running(nats_server) as engine:
        await engine.deploy(hello)
        execution = await engine.start("hello", {"name": "Ada"})
        msg = await ended.next_msg(timeout=20)
    told = check("feed", msg.data)
    assert msg.subject == f"natsflow.feed.hello.{execution}.execution_completed"
    assert told["execution_id"] == execution
    assert told["event"]["output"] == {"greeting": "Hello, Ada!"}
    try:
        await nc.jetstream().get_last_msg(DLQ_STREAM, "natsflow.dlq.>")
    except NotFoundError:
        pass
    else:
        raise AssertionError("a dead letter in a clean run")
