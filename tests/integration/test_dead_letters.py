"""Dead letters you can see and fix: what lands in NATSFLOW_DLQ, and ``dlq ls / show /
redrive / purge`` over the admin API, the CLI and HTTP, against a real nats-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client

from natsflow.actors.jetstream.topology import TASKS_STREAM, dlq_subject, task_subject
from natsflow.events.deadletters import ORIGINAL_SEQUENCE, ORIGINAL_STREAM, ORIGINAL_SUBJECT
from natsflow.events.errors import Conflict, InputError, NotFound
from natsflow.events.messages import Result, Task, json_encoder
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import Engine, running
from tests.integration.test_cli import natsflow

pytestmark = pytest.mark.sends_invalid_messages

HELLO = Path(__file__).parents[2] / "manifests" / "examples" / "hello.yaml"


async def letters(engine: Engine, reason: str | None = None) -> list[dict[str, Any]]:
    page = await engine.call("dlq.ls", {"reason": reason, "limit": 1000})
    rows: list[dict[str, Any]] = page["dead_letters"]
    assert page["total"] == len(rows)
    return rows


async def wait_letters(
    engine: Engine, count: int, reason: str | None = None
) -> list[dict[str, Any]]:
    async def listed() -> list[dict[str, Any]]:
        rows = await letters(engine, reason)
        assert len(rows) == count, rows
        return rows

    return await eventually(listed, within=10)


async def waiting_task(nc: Client, action: str = "shell") -> Task:
    """The task the (absent) workers have not taken yet."""

    async def stored() -> Task:
        msg = await nc.jetstream().get_last_msg(TASKS_STREAM, task_subject(action))
        return msgspec.json.decode(msg.data or b"", type=Task)

    return await eventually(stored, within=10, ignoring=(Exception,))


async def test_misdirected_results_land_in_the_dead_letters_and_a_fixed_one_is_redriven(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    # No workers: the test answers the step itself, as a worker in another language would.
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(HELLO)
        execution = await engine.start("hello", {"name": "Ada"})
        task = await waiting_task(nc)
        inbox = task.reply_to

        # A result that does not decode, one for a step the execution does not have, one
        # for an attempt it never scheduled, one for an execution that does not exist.
        await js.publish(inbox, b'{"kind": "result", "step": "greet", "attempt": "one"}')
        ghost = Result(step="ghost", attempt=1, ok=True, output=1)
        await js.publish(inbox, json_encoder.encode(ghost))
        future = Result(step="greet", attempt=7, ok=True, output=1)
        await js.publish(inbox, json_encoder.encode(future))
        await js.publish("natsflow.in.hello-nobody", json_encoder.encode(ghost))

        listed = await wait_letters(engine, 4)
        assert all(r["redrivable"] and r["at"] > 0 and r["size"] > 0 for r in listed)
        # One execution's messages are handled in order; another's may come in between.
        nobody = [r for r in listed if r["subject"] == "natsflow.in.hello-nobody"]
        rows = [r for r in listed if r["subject"] == inbox]
        assert [r["reason"] for r in rows] == ["result", "result", "result"]
        assert "attempt" in rows[0]["error"]
        assert "step 'ghost', which the execution has not scheduled" in rows[1]["error"]
        assert "attempt 7 of step 'greet'" in rows[2]["error"]
        assert nobody[0]["reason"] == "result"
        assert "no such execution" in nobody[0]["error"]
        results = [r["id"] for r in listed if r["reason"] == "result"]
        assert [r["id"] for r in await letters(engine, "result")] == results

        shown = await engine.call("dlq.show", {"id": rows[0]["id"]})
        assert (shown["reason"], shown["subject"]) == ("result", inbox)
        assert shown["payload_format"] == "json"
        assert shown["payload"]["attempt"] == "one"
        assert shown["headers"][ORIGINAL_SUBJECT] == inbox
        assert "not_redrivable" not in shown

        # The execution still waits; the operator sends the fixed result in its place.
        assert (await engine.show(execution))["status"] == "running"
        fixed = {"kind": "result", "step": "greet", "attempt": 1, "ok": True, "output": "fixed"}
        redriven = await engine.call("dlq.redrive", {"id": rows[0]["id"], "input": fixed})
        assert redriven["redriven"][0]["subject"] == inbox
        done = await engine.wait_done(execution)
        assert (done["status"], done["output"]) == ("completed", "fixed")
        with pytest.raises(NotFound):
            await engine.call("dlq.show", {"id": rows[0]["id"]})

        # A late copy of the result it recorded is ordinary traffic, not a dead letter: the
        # ghost sent after it on the same inbox is dead-lettered, the copy is not.
        await js.publish(inbox, json_encoder.encode(msgspec.convert(fixed, Result)))
        await js.publish(inbox, json_encoder.encode(ghost))
        rows = await wait_letters(engine, 4, "result")
        assert [r["subject"] for r in rows].count(inbox) == 3

        assert await engine.call("dlq.purge", {"reason": "result"}) == {"purged": 4}
        assert await letters(engine) == []


async def test_a_copy_of_an_undecodable_event_is_not_redriven(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server) as engine:
        headers = {
            ORIGINAL_SUBJECT: "natsflow.ev.hello-x",
            ORIGINAL_STREAM: "NATSFLOW_EVENTS",
            ORIGINAL_SEQUENCE: "7",
            "Natsflow-Error": "undecodable event",
        }
        copy = (await js.publish(dlq_subject("event"), b"\x00garbage", headers=headers)).seq
        garbage = (await js.publish(task_subject("noop"), b"not json")).seq
        assert garbage
        await wait_letters(engine, 2)

        shown = await engine.call("dlq.show", {"id": copy})
        assert shown["payload_format"] == "binary"
        assert "stays there and parks its execution" in shown["not_redrivable"]
        with pytest.raises(Conflict, match=r"not redriven: dead letter .* is a copy"):
            await engine.call("dlq.redrive", {"id": copy})
        with pytest.raises(InputError, match="give either an id or all=true"):
            await engine.call("dlq.redrive", {})

        # --all sends back what it can (the garbage task: dead-lettered again, with a new id)
        # and leaves the copy where it is.
        everything = await engine.call("dlq.redrive", {"all": True})
        assert (everything["redriven_count"], everything["skipped_count"]) == (1, 1)
        assert everything["skipped"][0]["id"] == copy
        rows = await wait_letters(engine, 2)
        assert rows[0]["id"] == copy
        assert rows[1]["reason"] == "task"
        assert rows[1]["id"] > everything["redriven"][0]["id"]

        assert await engine.call("dlq.purge", {"id": copy}) == {"purged": 1}
        with pytest.raises(NotFound):
            await engine.call("dlq.purge", {"id": copy})


async def test_the_cli_lists_shows_redrives_and_purges(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server) as engine:
        await js.publish(task_subject("noop"), b"not json", headers={"Trace": "t-1"})
        (row,) = await wait_letters(engine, 1)
        letter = str(row["id"])

        listed = await natsflow(engine, "dlq", "ls", "--json")
        table = await natsflow(engine, "dlq", "ls")
        shown = await natsflow(engine, "dlq", "show", letter)
        shown_json = await natsflow(engine, "dlq", "show", letter, "--json")
        bad_input = await natsflow(engine, "dlq", "redrive", letter, "--input", "{oops")
        no_target = await natsflow(engine, "dlq", "redrive")
        assert listed.code == 0, listed
        assert listed.json()["dead_letters"] == [row]
        assert table.out.split()[:6] == ["ID", "REASON", "TIME", "SIZE", "SUBJECT", "ERROR"]
        assert f"invalid task message on {task_subject('noop')}" in table.out
        assert shown.code == 0, shown
        assert "reason task" in shown.out
        assert f"subject     {task_subject('noop')}" in shown.out
        assert "Trace: t-1" in shown.out
        assert "payload (text):\nnot json" in shown.out
        assert shown_json.json()["original_headers"] == {"Trace": "t-1"}
        assert (bad_input.code, no_target.code) == (2, 2), (bad_input, no_target)
        assert "--input: invalid JSON" in bad_input.err

        # The fixed task goes back to its subject with its own headers; a worker runs it
        # and answers an execution that does not exist: that result is a dead letter too.
        seen = await nc.subscribe(task_subject("noop"))
        fixed = Task(
            execution_id="noop-nobody",
            step="s",
            attempt=1,
            action="noop",
            input={"a": 1},
            idempotency_key="noop-nobody:s:1",
            reply_to="natsflow.in.noop-nobody",
        )
        body = json_encoder.encode(fixed).decode()
        redrive = await natsflow(engine, "dlq", "redrive", letter, "--input", body)
        assert redrive.code == 0, redrive
        assert f"redriven {letter} -> {task_subject('noop')} (NATSFLOW_TASKS seq" in redrive.out
        sent = await seen.next_msg(timeout=5)
        assert msgspec.json.decode(sent.data, type=Task) == fixed
        assert sent.headers == {"Trace": "t-1", "Nats-Msg-Id": f"natsflow-redrive:{letter}"}
        (answer,) = await wait_letters(engine, 1, "result")
        assert answer["subject"] == "natsflow.in.noop-nobody"

        gone = await natsflow(engine, "dlq", "show", letter)
        assert gone.code == 1, gone
        assert f"dead letter {letter} not found" in gone.err
        purged = await natsflow(engine, "dlq", "purge", "--all", "--json")
        assert (purged.code, purged.json()) == (0, {"purged": 1}), purged
        assert await letters(engine) == []


async def test_http_routes(nats_server: EmbeddedServer, nc: Client) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1/dlq"
    js = nc.jetstream()
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        await js.publish(task_subject("noop"), b"not json")
        await js.publish(task_subject("noop"), b"[1, 2")
        first, second = await wait_letters(engine, 2)

        async with http.get(base, params={"limit": "1"}) as resp:
            assert resp.status == 200
            page = await resp.json()
        assert page == {"total": 2, "dead_letters": [first]}
        async with http.get(f"{base}/{second['id']}") as resp:
            assert resp.status == 200
            assert (await resp.json())["payload"] == "[1, 2"
        async with http.get(f"{base}/x") as resp:
            assert resp.status == 400
        async with http.post(f"{base}/999/redrive", json={"input": 1}) as resp:
            assert resp.status == 404
        async with http.delete(f"{base}/{first['id']}") as resp:
            assert (resp.status, await resp.json()) == (200, {"purged": 1})
        async with http.post(f"{base}/purge", json={}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/purge", json={"reason": "task"}) as resp:
            assert (resp.status, await resp.json()) == (200, {"purged": 1})
