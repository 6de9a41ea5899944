"""Result subjects: workers answer on ``natsflow.result.<partition>.<execution>``, which
carries results and progress only; control messages there are dead letters."""

from __future__ import annotations

from nats.aio.client import Client
from nats.js import api

from natsflow.actors.jetstream.topology import (
    ACTORS_CONSUMER,
    INBOX_STREAM,
    inbox_subject,
    result_subject,
)
from natsflow.events.messages import Cancel, Progress, Result, Start, json_encoder
from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running
from tests.integration.test_dead_letters import HELLO, wait_letters, waiting_task


async def test_control_messages_on_a_result_subject_are_refused_and_results_go_through(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(HELLO)
        execution = await engine.start("hello", {"name": "Ada"})
        task = await waiting_task(nc)
        assert task.reply_to == result_subject(execution)

        # A cancel (and a start) sent where results go: refused, the execution goes on.
        await js.publish(task.reply_to, json_encoder.encode(Cancel(reason="a worker")))
        start = Start(workflow="hello", version="x")
        await js.publish(task.reply_to, json_encoder.encode(start))
        rows = await wait_letters(engine, 2, "result")
        assert ["'cancel' message on the result subject" in r["error"] for r in rows] == [
            True,
            False,
        ]
        assert "'start' message on the result subject" in rows[1]["error"]
        assert all(r["subject"] == task.reply_to for r in rows)
        assert (await engine.show(execution))["status"] == "running"

        progress = Progress(step="greet", attempt=1, message="half way")
        await js.publish(task.reply_to, json_encoder.encode(progress))
        result = Result(step="greet", attempt=1, ok=True, output="hi")
        await js.publish(task.reply_to, json_encoder.encode(result))
        done = await engine.wait_done(execution)
        assert (done["status"], done["output"]) == ("completed", "hi")


async def test_a_result_on_the_inbox_still_counts_for_tasks_sent_before_result_subjects(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(HELLO)
        execution = await engine.start("hello", {"name": "Ada"})
        await waiting_task(nc)
        result = Result(step="greet", attempt=1, ok=True, output="old reply_to")
        await js.publish(inbox_subject(execution), json_encoder.encode(result))
        done = await engine.wait_done(execution)
        assert done["output"] == "old reply_to"


async def test_an_actors_consumer_of_an_older_version_is_brought_up_to_date(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    old = api.StreamConfig(
        name=INBOX_STREAM,
        subjects=["natsflow.in.>", "natsflow.sched.>"],
        retention=api.RetentionPolicy.WORK_QUEUE,
        allow_msg_schedules=True,
    )
    await js.add_stream(old)
    await js.add_consumer(
        INBOX_STREAM,
        api.ConsumerConfig(
            durable_name=ACTORS_CONSUMER,
            filter_subject="natsflow.in.>",
            ack_policy=api.AckPolicy.EXPLICIT,
        ),
    )
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(HELLO)
        execution = await engine.start("hello", {"name": "Ada"})
        task = await waiting_task(nc)
        result = Result(step="greet", attempt=1, ok=True, output="upgraded")
        await js.publish(task.reply_to, json_encoder.encode(result))
        assert (await engine.wait_done(execution))["output"] == "upgraded"
    info = await js.consumer_info(INBOX_STREAM, ACTORS_CONSUMER)
    assert sorted(info.config.filter_subjects or []) == ["natsflow.in.>", "natsflow.result.>"]
