"""A trigger message with ``Natsflow-Reply-To`` is answered with its execution id."""

from __future__ import annotations

import orjson
import pytest

from natsflow.events.errors import Conflict, NotFound
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import connect, running
from tests.integration.test_triggers import ORDERS, TYPED


async def test_the_reply_names_the_execution_the_message_started(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        reply = await engine.client.trigger("orders.eu.created", {"order": 1})
        assert reply.workflow == "orders"
        assert reply.created
        assert reply.error is None
        assert reply.execution_id is not None
        view = await engine.wait_done(reply.execution_id)
        assert view["status"] == "completed"
        assert view["input"] == {"order": 1}


async def test_any_client_gets_the_reply_on_the_subject_it_names(
    nats_server: EmbeddedServer,
) -> None:
    """What a worker in another language does: plain NATS, no natsflow import."""
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        nc = engine.nc
        sub = await nc.subscribe("replies.to.me", max_msgs=1)
        await nc.publish(
            "orders.x.created",
            orjson.dumps({"order": 2}),
            headers={"Natsflow-Reply-To": "replies.to.me"},
        )
        reply = orjson.loads((await sub.next_msg(timeout=10)).data)
        assert set(reply) == {"workflow", "execution_id", "version", "created"}
        assert reply["workflow"] == "orders"
        assert reply["created"] is True
        assert (await engine.wait_done(reply["execution_id"]))["status"] == "completed"


async def test_a_refused_message_is_answered_with_the_reason_and_its_dead_letter(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(TYPED)
        reply = await engine.client.trigger("orders.x.created", {"order": "seven"})
        assert reply.execution_id is None
        assert reply.dead_letter is not None
        assert reply.error is not None
        assert "input.order: 'seven' is not of type" in reply.error
        letter = await engine.client.dlq_show(reply.dead_letter)
        assert "input.order: 'seven' is not of type 'integer'" in letter.error
        assert letter.subject == "orders.x.created"


async def test_a_duplicate_is_answered_with_the_first_execution_or_refused_when_dropped(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS + "idempotency_key: ${{ input.order }}\n")
        first = await engine.client.trigger("orders.x.created", {"order": 3})
        again = await engine.client.trigger("orders.y.created", {"order": 3})
        assert again.execution_id == first.execution_id
        assert again.created is False
        await engine.client.trigger("orders.x.created", {"order": 4}, msg_id="m4")
        with pytest.raises(Conflict, match="Nats-Msg-Id 'm4'"):
            await engine.client.trigger("orders.x.created", {"order": 4}, msg_id="m4")
        with pytest.raises(NotFound, match=r"no trigger captures 'nothing\.here'"):
            await engine.client.trigger("nothing.here", {})


async def test_a_message_published_while_no_instance_runs_is_answered_when_one_starts(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
    async with connect(nats_server.url) as publisher:
        sub = await publisher.nc.subscribe("late.reply", max_msgs=1)
        await publisher.nc.publish(
            "orders.x.created",
            orjson.dumps({"order": 5}),
            headers={"Natsflow-Reply-To": "late.reply"},
        )
        await publisher.nc.flush()
        async with running(nats_server):
            reply = orjson.loads((await sub.next_msg(timeout=20)).data)
            assert reply["created"] is True

            async def done() -> None:
                row = (await publisher.show(reply["execution_id"]))["status"]
                assert row == "completed"

            await eventually(done, within=20)


async def test_a_reply_to_that_is_not_a_subject_still_starts_the_execution(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        await engine.nc.publish(
            "orders.x.created",
            orjson.dumps({"order": 6}),
            headers={"Natsflow-Reply-To": "not a.subject.>"},
        )

        async def started() -> None:
            assert len(await engine.ls(workflow="orders")) == 1

        await eventually(started, within=20)
