"""Snapshots and compaction against a real nats-server: resume reads snapshot + tail."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from msgspec.structs import replace
from nats.aio.client import Client

from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    EVENTS_STREAM,
    events_subject,
    inbox_subject,
    snapshot_subject,
)
from natsflow.events.codec import STATE_SCHEMA_VERSION, Snapshot
from natsflow.events.errors import NotFound, SnapshotSchemaError, Undecodable
from natsflow.events.fold import fold
from natsflow.events.messages import TimerDue, json_encoder
from natsflow.events.model import INITIAL, ExecutionStarted, TimerStarted
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running

LOOP = """
name: loop
steps:
  page:
    action: python
    with:
      function: fetch_page
      args: {page: "${{ loop.iteration }}", pages: "${{ input.pages }}"}
    repeat: {until: "${{ not output.has_more }}"}
  after:
    action: noop
    needs: [page]
    with: {last: "${{ steps.page.output.page }}"}
output: "${{ steps.after.output }}"
"""

NAP = """
name: nap
steps:
  nap: {action: sleep, with: {duration: 1h}}
  done: {action: noop, needs: [nap], with: {ok: true}}
output: "${{ steps.done.output }}"
"""


async def archive_caught_up(engine: Engine, execution: str, events: int) -> dict[str, Any]:
    """The archive is sourced asynchronously: wait until it has every event."""

    async def caught_up() -> dict[str, Any]:
        archived: dict[str, Any] = await engine.call(
            "history", {"execution_id": execution, "all": True}
        )
        assert len(archived["events"]) >= events, f"archived {len(archived['events'])}/{events}"
        return archived

    return await eventually(caught_up, within=20, interval=0.1, ignoring=(NotFound,))


async def compacted_history(engine: Engine, execution: str, below: int) -> dict[str, Any]:
    """Wait until the hot stream's history is shorter than ``below``."""

    async def compacted() -> dict[str, Any]:
        history: dict[str, Any] = await engine.call("history", {"execution_id": execution})
        assert len(history["events"]) < below, f"not compacted: {len(history['events'])} events"
        return history

    return await eventually(compacted, within=20, interval=0.1)


async def test_a_loop_is_compacted_and_the_archive_keeps_every_event(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    # Sourcing into the archive is asynchronous and compaction never drops an event the
    # archive lacks, so compaction may wait for a later snapshot: the one written when
    # the idle actor is passivated.
    async with running(
        nats_server, snapshot_every=7, archive=True, actor_idle_timeout=1.0
    ) as engine:
        await engine.deploy(LOOP)
        execution = await engine.start("loop", {"pages": 40})
        shown = await engine.wait_done(execution, timeout=60)
        assert shown["status"] == "completed"
        assert shown["output"] == {"last": 39}
        total = shown["resume_point"]["events"]
        archived = await archive_caught_up(engine, execution, total)
        compacted = await compacted_history(engine, execution, below=7 + 4)

    # The hot stream holds the snapshot and a short tail; the archive holds everything.
    assert "snapshot" in compacted
    assert "compacted" in compacted["note"]
    assert [e["type"] for e in archived["events"]][:2] == ["execution_started", "step_scheduled"]
    assert len(archived["events"]) == total

    # fold(snapshot, tail) == fold(all events), read back from the streams.
    store = EventStore(nc, nc.jetstream())
    from_snapshot = await store.load(execution)
    archived_events = [event async for _, event in store.read_history(execution, archive=True)]
    readable = [event for event in archived_events if not isinstance(event, Undecodable)]
    assert readable == archived_events
    full = fold(readable, replace(INITIAL, execution_id=execution))
    assert from_snapshot.state == full
    assert from_snapshot.snapshot_seq > 0


async def test_a_snapshot_of_the_previous_schema_is_upgraded_on_activation(
    nats_server: EmbeddedServer, nc: Client
) -> None:
    """A v1 snapshot (resume point named ``event_count``) is read through its upcaster."""
    execution = "nap-oldschema"
    js = nc.jetstream()
    async with running(nats_server) as engine:
        await engine.deploy(NAP)
        version = (await engine.call("workflows", {}))[0]["version"]
        store = EventStore(nc, js)
        events = (
            ExecutionStarted(at=1.0, execution_id=execution, workflow="nap", version=version),
            TimerStarted(at=1.0, timer_id="nap/sleep/0/1", step="nap", due=2.0, purpose="sleep"),
        )
        seq = await store.append(execution, events, 0)
        state = fold(events, replace(INITIAL, execution_id=execution))
        v1_state = msgspec.to_builtins(state)
        v1_state["event_count"] = v1_state.pop("events")
        snapshot = Snapshot(
            schema=STATE_SCHEMA_VERSION - 1,
            covers=seq,
            state=msgspec.Raw(msgspec.msgpack.encode(v1_state)),
        )
        await js.publish(
            snapshot_subject(execution),
            msgspec.msgpack.encode(snapshot),
            headers={"Nats-Rollup": "sub"},
        )
        await js.purge_stream(EVENTS_STREAM, subject=events_subject(execution), seq=seq)

        # The timer fires: the actor activates from the old snapshot and goes on.
        await js.publish(
            inbox_subject(execution),
            json_encoder.encode(TimerDue(timer_id="nap/sleep/0/1", step="nap")),
        )
        shown = await engine.wait_done(execution, timeout=20)
    assert shown["status"] == "completed"
    assert shown["output"] == {"ok": True}
    assert shown["resume_point"]["events"] > 2


async def test_a_snapshot_from_newer_code_is_refused_not_misread(nc: Client) -> None:
    from natsflow.actors.jetstream.topology import provision

    js = nc.jetstream()
    await provision(js, ack_wait=5)
    execution = "from-the-future"
    snapshot = Snapshot(schema=STATE_SCHEMA_VERSION + 1, covers=1, state=msgspec.Raw(b"\x80"))
    await js.publish(snapshot_subject(execution), msgspec.msgpack.encode(snapshot))
    with pytest.raises(SnapshotSchemaError, match="newer than this code"):
        await EventStore(nc, js).load(execution)
