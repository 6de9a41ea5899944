"""Poison never stalls: an undecodable event, snapshot or summary parks, shows, lists.

Garbage appended to an execution's history parks it as failed with a reason naming
the subject and sequence; a copy goes to the dead letters; the inbox messages that
find it are settled, not redelivered forever; and show, history and ls answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from nats.aio.client import Client

from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    ACTORS_CONSUMER,
    DLQ_STREAM,
    EVENTS_STREAM,
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
    events_subject,
    inbox_subject,
    provision,
    snapshot_subject,
    timers_subject,
)
from natsflow.events.errors import Undecodable
from natsflow.events.fold import fold
from natsflow.events.messages import TimerDue, json_encoder
from natsflow.events.model import INITIAL, ExecutionStarted, StepScheduled
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running

# A step done, then a long sleep: two batches in the history, and an execution that
# waits (for an hour) until a message comes.
NAPPER = """
name: napper
steps:
  first: {action: noop, with: {a: 1}}
  nap: {action: sleep, with: {duration: 1h}, needs: [first]}
"""
GARBAGE = b"\xc1 not msgpack, not natsflow"
# Long enough that no test sees an actor passivate (and snapshot) on its own.
SETTINGS: dict[str, Any] = {"actor_idle_timeout": 600.0}


async def napping(engine: Engine) -> str:
    """An execution of ``napper`` waiting in its sleep."""
    await engine.deploy(NAPPER)
    execution = await engine.start("napper", {})

    async def waiting() -> None:
        shown = await engine.show(execution)
        assert shown["steps"].get("nap", {}).get("status") == "waiting", shown

    await eventually(waiting, within=10, ignoring=(Exception,))
    return execution


async def poke(nc: Client, execution: str) -> None:
    """An inbox message for the execution (a stray timer: it decides nothing new)."""
    body = json_encoder.encode(TimerDue(timer_id="stray", step="nap"))
    await nc.jetstream().publish(inbox_subject(execution), body)


async def parked(engine: Engine, execution: str) -> dict[str, Any]:
    """``show`` of the execution once it is parked (show answers throughout)."""

    async def check() -> dict[str, Any]:
        rows = await engine.ls(status="failed")
        assert [r["execution_id"] for r in rows] == [execution], rows
        shown = await engine.show(execution)
        assert shown["status"] == "failed", shown
        assert shown["error"] == rows[0]["error"]
        assert shown["finished_at"] == rows[0]["finished_at"]
        return shown

    return await eventually(check, within=10)


async def drained(nc: Client) -> None:
    """Every inbox message has been settled: nothing pending, nothing awaiting an ack."""

    async def check() -> None:
        info = await nc.jetstream().consumer_info(INBOX_STREAM, ACTORS_CONSUMER)
        assert (info.num_pending, info.num_ack_pending) == (0, 0), info

    await eventually(check, within=10)


async def letters(nc: Client, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every dead letter on ``subject`` (data, headers), oldest first."""
    js = nc.jetstream()
    info = await js.stream_info(DLQ_STREAM, subjects_filter=subject)
    out: list[tuple[bytes, dict[str, str]]] = []
    seq = 0
    for _ in range((info.state.subjects or {}).get(subject, 0)):
        msg = await js.get_msg(DLQ_STREAM, seq + 1, subject=subject, next=True)
        assert msg.seq is not None
        seq = msg.seq
        out.append((msg.data or b"", dict(msg.headers or {})))
    return out


async def test_an_undecodable_event_parks_the_execution_visibly(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, **SETTINGS) as engine:
        execution = await napping(engine)
        bad = (await js.publish(events_subject(execution), GARBAGE)).seq
        await poke(nc, execution)

        shown = await parked(engine, execution)
        where = f"{events_subject(execution)} at sequence {bad}"
        assert where in shown["error"]
        assert shown["parked"]["subject"] == events_subject(execution)
        assert shown["parked"]["seq"] == bad
        assert shown["parked"]["what"] == "event"
        assert shown["steps"]["first"]["status"] == "completed"  # what precedes it

        # The copy of the garbage, where it was, and the message that found it.
        ((data, headers),) = await eventually(
            lambda: _some(letters(nc, "natsflow.dlq.event")), within=10
        )
        assert data == GARBAGE
        assert headers["Natsflow-Original-Subject"] == events_subject(execution)
        assert headers["Natsflow-Original-Sequence"] == str(bad)
        assert headers["Natsflow-Original-Stream"] == EVENTS_STREAM
        assert where in headers["Natsflow-Error"]
        await drained(nc)
        inbox_letters = await letters(nc, "natsflow.dlq.inbox")
        assert len(inbox_letters) == 1
        assert inbox_letters[0][1]["Natsflow-Error"].startswith("parked: ")

        # history: what decodes, and a line for what does not.
        history = await engine.history(execution)
        types = [e["type"] for e in history]
        assert types[0] == "execution_started"
        assert types[-1] == "undecodable"
        assert history[-1]["seq"] == bad
        assert history[-1]["subject"] == events_subject(execution)

        # Its sleep's timer is gone; a later message is settled at once, not copied again.
        timers = await js.stream_info(INBOX_STREAM, subjects_filter=timers_subject(execution))
        assert not timers.state.subjects
        await poke(nc, execution)
        await eventually(lambda: _count(letters(nc, "natsflow.dlq.inbox"), 2), within=10)
        await drained(nc)
        assert len(await letters(nc, "natsflow.dlq.event")) == 1

        # The service goes on with other executions.
        other = await engine.start("napper", {})
        assert (await engine.wait_for(other, ("running",), timeout=10))["status"] == "running"


# A step that runs until the test lets it finish (a file appears).
GATED = """
name: gated
steps:
  gate:
    action: shell
    with:
      argv:
        - python3
        - -c
        - "import os,sys,time\\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"
        - "${{ input.gate }}"
"""


async def test_a_step_result_after_an_undecodable_event_parks_it(
    nats_server: EmbeddedServer, nc: Client, tmp_path: Path
) -> None:
    """The step in flight finishes after garbage was appended: its result parks it."""
    gate = tmp_path / "gate"
    async with running(nats_server, **SETTINGS) as engine:
        await engine.deploy(GATED)
        execution = await engine.start("gated", {"gate": str(gate)})
        await engine.wait_for(execution, ("running",), timeout=10)
        bad = (await nc.jetstream().publish(events_subject(execution), GARBAGE)).seq
        gate.touch()
        shown = await parked(engine, execution)
        assert shown["parked"]["seq"] == bad
        assert shown["steps"]["gate"]["status"] == "scheduled"  # its result was not folded
        await drained(nc)
        ((_, headers),) = await letters(nc, "natsflow.dlq.inbox")
        assert headers["Natsflow-Error"] == f"parked: {shown['error']}"


async def test_a_parked_execution_is_parked_once_across_activations(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    """A restarted service finds the execution parked already: one read, no new copy."""
    js = nc.jetstream()
    async with running(nats_server, **SETTINGS) as engine:
        execution = await napping(engine)
        await js.publish(events_subject(execution), GARBAGE)
        await poke(nc, execution)
        first = await parked(engine, execution)
        await drained(nc)
    async with running(nats_server, **SETTINGS) as engine:
        await poke(nc, execution)
        await eventually(lambda: _count(letters(nc, "natsflow.dlq.inbox"), 2), within=10)
        await drained(nc)
        assert (await engine.show(execution))["finished_at"] == first["finished_at"]
    assert len(await letters(nc, "natsflow.dlq.event")) == 1


async def test_an_undecodable_snapshot_over_compacted_events_parks(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, **SETTINGS) as engine:
        execution = await napping(engine)
        # A snapshot that cannot be read, over a history whose start was compacted away.
        info = await js.stream_info(EVENTS_STREAM, subjects_filter=events_subject(execution))
        last = (await js.get_last_msg(EVENTS_STREAM, events_subject(execution))).seq
        assert info.state.subjects == {events_subject(execution): 2}
        bad = (
            await js.publish(snapshot_subject(execution), GARBAGE, headers={"Nats-Rollup": "sub"})
        ).seq
        await js.purge_stream(EVENTS_STREAM, subject=events_subject(execution), seq=last)
        await poke(nc, execution)

        shown = await parked(engine, execution)
        assert shown["parked"]["subject"] == snapshot_subject(execution)
        assert shown["parked"]["seq"] == bad
        assert f"{snapshot_subject(execution)} at sequence {bad}" in shown["error"]
        assert shown["workflow"] == "napper"  # from its summary: the history cannot say
        ((data, headers),) = await eventually(
            lambda: _some(letters(nc, "natsflow.dlq.snapshot")), within=10
        )
        assert data == GARBAGE
        assert headers["Natsflow-Original-Sequence"] == str(bad)
        await drained(nc)

        history = await engine.client.history(execution)
        assert history.note is not None
        assert "undecodable snapshot" in history.note
        marks = [e for e in history.events if e["type"] == "undecodable"]
        assert [m["seq"] for m in marks] == [bad]


async def test_an_undecodable_snapshot_is_read_around_while_the_history_is_whole(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    """Nothing compacted yet: folding every event gives the state, and work goes on."""
    js = nc.jetstream()
    async with running(nats_server, **SETTINGS) as engine:
        execution = await napping(engine)
        await js.publish(snapshot_subject(execution), GARBAGE, headers={"Nats-Rollup": "sub"})
        shown = await engine.show(execution)
        assert shown["status"] == "running"
        assert shown["parked"] is None
        # The real timer, due now: the execution finishes, past the garbage snapshot.
        body = json_encoder.encode(TimerDue(timer_id="nap/sleep/0/1", step="nap"))
        await js.publish(inbox_subject(execution), body)
        await poke(nc, execution)  # (a stray one too: it must not park anything)
        done = await engine.wait_done(execution)
        await drained(nc)
    assert done["status"] == "completed", done
    assert (await js.stream_info(DLQ_STREAM)).state.messages == 0


async def test_the_store_names_what_it_cannot_decode(nc: Client) -> None:
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    store = EventStore(nc, js)
    execution = "garbled"
    started = ExecutionStarted(at=1.0, execution_id=execution, workflow="w", version="v")
    seq = await store.append(execution, (started,), 0)
    bad = (await js.publish(events_subject(execution), GARBAGE)).seq
    scheduled = StepScheduled(at=2.0, step="s", attempt=1, action="noop")
    after = (await js.publish(events_subject(execution), _batch(scheduled))).seq

    with pytest.raises(Undecodable) as info:
        await store.load(execution)
    problem = info.value
    assert (problem.what, problem.subject, problem.seq) == ("event", events_subject(execution), bad)
    assert problem.stream == EVENTS_STREAM
    assert problem.data == GARBAGE
    assert f"sequence {bad}" in str(problem)

    loaded = await store.load(execution, partial=True)
    assert loaded.problem is not None
    assert loaded.problem.seq == bad
    assert loaded.last_seq == seq
    assert loaded.state == fold([started], replace(INITIAL, execution_id=execution))

    read = [(s, e) async for s, e in store.read_history(execution)]
    assert [s for s, _ in read] == [seq, bad, after]
    assert isinstance(read[1][1], Undecodable)
    assert read[2][1] == scheduled


async def test_an_undecodable_snapshot_is_replaced_by_the_next(nc: Client) -> None:
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    store = EventStore(nc, js)
    execution = "resnap"
    started = ExecutionStarted(at=1.0, execution_id=execution, workflow="w", version="v")
    seq = await store.append(execution, (started,), 0)
    bad = (await js.publish(snapshot_subject(execution), GARBAGE)).seq
    loaded = await store.load(execution)
    assert loaded.snapshot_seq == bad  # the one a new snapshot compares against
    assert loaded.last_seq == seq
    assert loaded.state.workflow == "w"
    with pytest.raises(Undecodable):
        await store.snapshot_info(execution)
    await store.write_snapshot(execution, loaded.state, seq, loaded.snapshot_seq)
    info = await store.snapshot_info(execution)
    assert info is not None
    assert info[1] == loaded.state


async def test_an_undecodable_summary_is_listed_as_unknown(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    js = nc.jetstream()
    async with running(nats_server, **SETTINGS) as engine:
        execution = await napping(engine)
        kv = await js.key_value(EXECUTIONS_BUCKET)
        await kv.put("broken-summary", b"{not json")
        rows = {r["execution_id"]: r for r in await engine.ls()}
        assert rows[execution]["status"] == "running"
        assert rows["broken-summary"]["status"] == "unknown"
        assert "undecodable summary" in rows["broken-summary"]["error"]
        assert [r["execution_id"] for r in await engine.ls(status="running")] == [execution]
        with pytest.raises(Undecodable, match="broken-summary"):
            await read_summary(js, "broken-summary")
        assert len(await engine.ls()) == 2


def _batch(*events: Any) -> bytes:
    from natsflow.events.codec import encode_batch

    return encode_batch(tuple(events))


async def _some(pending: Any) -> Any:
    found = await pending
    assert found, "nothing yet"
    return found


async def _count(pending: Any, n: int) -> Any:
    found = await pending
    assert len(found) == n, found
    return found
