"""Trigger subjects: one execution per message, kept while nobody runs, deduplicated."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from natsflow.actors.jetstream.topology import DLQ_STREAM
from natsflow.actors.jetstream.triggers import TRIGGERS_STREAM
from natsflow.events.errors import ManifestError
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running
from tests.integration.test_cli import natsflow

ORDERS = """\
name: orders
triggers:
  - subject: "orders.*.created"
steps:
  echo:
    action: noop
    with:
      value: ${{ input.order }}
"""

KEYED = (
    ORDERS.replace("name: orders", "name: keyed").replace("orders.*.created", "keyed.>")
    + "idempotency_key: ${{ input.order }}\n"
)


async def completed(engine: Engine, workflow: str, count: int, within: float = 30) -> None:
    async def all_done() -> list[dict[str, Any]]:
        rows = await engine.ls(workflow=workflow)
        assert len(rows) == count, f"{len(rows)} executions of {workflow}, expected {count}"
        assert {row["status"] for row in rows} == {"completed"}, rows
        return rows

    await eventually(all_done, within=within, interval=0.1)


async def publish(engine: Engine, subject: str, payload: Any, **headers: str) -> None:
    await engine.nc.publish(subject, orjson.dumps(payload), headers=headers or None)


async def test_each_message_starts_one_execution(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        for n in range(5):
            await publish(engine, f"orders.eu{n}.created", {"order": n})
        await completed(engine, "orders", 5)


async def test_messages_published_while_no_instance_runs_start_later(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
    async with running(nats_server, instances=0) as engine:  # nobody serves
        for n in range(4):
            await publish(engine, "orders.x.created", {"order": n})
    async with running(nats_server) as engine:
        await completed(engine, "orders", 4)


async def test_duplicates_by_message_id_or_key_start_one_execution(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server, instances=2) as engine:
        await engine.deploy(ORDERS)
        await engine.deploy(KEYED)
        for n in range(10):
            for _ in range(2):
                await publish(engine, "orders.a.created", {"order": n}, **{"Nats-Msg-Id": f"m{n}"})
                await publish(engine, f"keyed.{n}", {"order": n})
        await completed(engine, "orders", 10)
        await completed(engine, "keyed", 10)


async def test_a_payload_that_is_not_json_is_dead_lettered(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        await engine.nc.publish("orders.bad.created", b"\x00not json")
        await publish(engine, "orders.good.created", {"order": 1})
        await completed(engine, "orders", 1)
        js = engine.nc.jetstream()

        async def dead_lettered() -> None:
            msg = await js.get_msg(DLQ_STREAM, subject="natsflow.dlq.trigger")
            assert msg.data == b"\x00not json"
            assert msg.headers is not None
            assert msg.headers["Natsflow-Original-Subject"] == "orders.bad.created"
            assert "not JSON" in msg.headers["Natsflow-Error"]

        await eventually(dead_lettered, within=10, ignoring=(Exception,))


async def test_an_overlapping_trigger_is_refused(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    other = ORDERS.replace("name: orders", "name: other").replace("orders.*.created", "orders.>")
    manifest = tmp_path / "other.yaml"
    manifest.write_text(other)
    async with running(nats_server) as engine:
        await engine.deploy(ORDERS)
        with pytest.raises(ManifestError, match=r"triggers\[0\]\.subject: 'orders.>' overlaps"):
            await engine.deploy(other)
        run = await natsflow(engine, "deploy", str(manifest))
        names = {row.workflow for row in await engine.client.workflows()}
        assert "other" not in names
    assert run.code == 2, run
    assert "triggers[0].subject: 'orders.>' overlaps 'orders.*.created'" in run.err, run


async def test_a_disabled_workflow_keeps_its_messages_until_enabled(
    nats_server: EmbeddedServer,
) -> None:
    disabled = ORDERS + "enabled: false\n"
    async with running(nats_server) as engine:
        await engine.deploy(disabled)
        for n in range(3):
            await publish(engine, "orders.x.created", {"order": n})
        js = engine.nc.jetstream()

        async def kept() -> None:
            info = await js.stream_info(TRIGGERS_STREAM)
            assert info.state.messages == 3

        await eventually(kept, within=10)
        assert await engine.ls(workflow="orders") == []
        await engine.deploy(ORDERS)
        await completed(engine, "orders", 3)


@pytest.mark.parametrize("serving", [1, 2], ids=["one-instance", "two-instances"])
@pytest.mark.parametrize(
    "count", [pytest.param(100, id="100"), pytest.param(1000, id="1000", marks=pytest.mark.slow)]
)
async def test_every_message_twice_half_while_stopped_gives_one_execution_each(
    nats_server: EmbeddedServer, count: int, serving: int
) -> None:
    """Each message published twice (half with the same Nats-Msg-Id, half with the same
    key in the payload): half while ``serving`` instances run, half while none does;
    then two instances take the rest."""

    async def publish_range(engine: Engine, numbers: range) -> None:
        for n in numbers:
            for _ in range(2):
                if n % 2:
                    await publish(engine, "keyed.x", {"order": n})
                else:
                    await publish(
                        engine, "orders.x.created", {"order": n}, **{"Nats-Msg-Id": f"m{n}"}
                    )

    async with running(nats_server, instances=serving) as engine:
        await engine.deploy(ORDERS)
        await engine.deploy(KEYED)
        await publish_range(engine, range(count // 2))
    async with running(nats_server, instances=0) as engine:
        await publish_range(engine, range(count // 2, count))
    async with running(nats_server, instances=2) as engine:
        await completed(engine, "orders", count // 2, within=120)
        await completed(engine, "keyed", count // 2, within=120)


async def test_a_payload_that_breaks_the_input_schema_is_dead_lettered_naming_the_field(
    nats_server: EmbeddedServer,
) -> None:
    typed = (
        ORDERS
        + "input:\n  type: object\n  required: [order]\n  properties:\n    order: {type: integer}\n"
    )
    async with running(nats_server) as engine:
        await engine.deploy(typed)
        await publish(engine, "orders.x.created", {"order": "seven"})
        await publish(engine, "orders.x.created", {"order": 7})
        await completed(engine, "orders", 1)
        js = engine.nc.jetstream()

        async def dead_lettered() -> None:
            msg = await js.get_msg(DLQ_STREAM, subject="natsflow.dlq.trigger")
            assert msg.headers is not None
            assert "input.order: 'seven' is not of type 'integer'" in msg.headers["Natsflow-Error"]

        await eventually(dead_lettered, within=10, ignoring=(Exception,))


async def test_steps_see_the_trigger_subject_and_headers(nats_server: EmbeddedServer) -> None:
    seen = (
        ORDERS.replace(
            "      value: ${{ input.order }}\n",
            "      value: ${{ input.order }}\n"
            "      subject: ${{ trigger.subject }}\n"
            "      tenant: ${{ trigger.headers['X-Tenant'] }}\n",
        )
        + "output: ${{ steps.echo.output }}\n"
    )
    async with running(nats_server) as engine:
        await engine.deploy(seen)
        await publish(engine, "orders.eu.created", {"order": 5}, **{"X-Tenant": "acme"})
        await completed(engine, "orders", 1)
        [row] = await engine.ls(workflow="orders")
        shown = await engine.show(row["execution_id"])
    assert shown["output"] == {
        "value": 5,
        "subject": "orders.eu.created",
        "tenant": "acme",
    }


TYPED = (
    ORDERS
    + "input:\n  type: object\n  required: [order]\n  properties:\n    order: {type: integer}\n"
)


async def test_invalid_payloads_are_dead_lettered_naming_the_field_and_one_redriven_fixed(
    nats_server: EmbeddedServer,
) -> None:
    """Wrong type, missing required field, random bytes, 900 KB of garbage on a trigger
    subject: the service stays up, each is in ``dlq ls`` with a reason naming the field,
    and one redriven with a fixed ``--input`` (the CLI) starts an execution that completes."""
    noise = random.Random(8)
    invalid = {
        "orders.wrongtype.created": (
            orjson.dumps({"order": "seven"}),
            "input.order: 'seven' is not of type 'integer'",
        ),
        "orders.missing.created": (
            orjson.dumps({"customer": "ada"}),
            "input: 'order' is a required property",
        ),
        # A leading '}' is never JSON, whatever follows.
        "orders.bytes.created": (b"}" + noise.randbytes(255), "the payload is not JSON"),
        "orders.huge.created": (b"}" + noise.randbytes(900 * 1024), "the payload is not JSON"),
    }
    async with running(nats_server) as engine:
        await engine.deploy(TYPED)
        for subject, (payload, _) in invalid.items():
            await engine.nc.publish(subject, payload)
        await publish(engine, "orders.good.created", {"order": 1})
        await completed(engine, "orders", 1)

        async def all_dead_lettered() -> dict[str, dict[str, Any]]:
            page = await engine.client.dlq_ls(reason="trigger")
            rows = {row.subject: row for row in page.dead_letters}
            assert sorted(rows) == sorted(invalid), rows
            return {subject: msgspec.to_builtins(row) for subject, row in rows.items()}

        rows = await eventually(all_dead_lettered, within=20)
        for subject, (payload, reason) in invalid.items():
            row = rows[subject]
            assert reason in row["error"], (subject, row["error"])
            assert subject in row["error"], row["error"]
            assert row["size"] == len(payload)
            assert row["redrivable"]
        shown = msgspec.to_builtins(await engine.client.dlq_show(rows["orders.huge.created"]["id"]))
        assert shown["payload_format"] == "binary"
        assert shown["truncated"]

        # The service is still up: it answers, and a good message still starts an execution.
        await engine.nc.request("$SRV.PING.natsflow", b"", timeout=5)
        await publish(engine, "orders.later.created", {"order": 2})
        await completed(engine, "orders", 2)

        # An operator fixes the wrong-typed one and redrives it with the CLI's --input.
        letter = str(rows["orders.wrongtype.created"]["id"])
        run = await natsflow(engine, "dlq", "redrive", letter, "--input", '{"order": 7}')
        assert run.code == 0, run
        await completed(engine, "orders", 3)
        rows_now = await engine.ls(workflow="orders")
        inputs = [(await engine.show(row["execution_id"]))["input"] for row in rows_now]
        assert sorted(i["order"] for i in inputs) == [1, 2, 7], inputs
        left = await engine.client.dlq_ls(reason="trigger")
        assert sorted(row.subject for row in left.dead_letters) == sorted(
            set(invalid) - {"orders.wrongtype.created"}
        )
