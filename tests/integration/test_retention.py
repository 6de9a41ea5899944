"""Retention against a real nats-server: finished executions past their workflow's
``retention`` leave the streams and KV and show as expired; running ones and those
of workflows without retention stay. And the index's bounded catch-up reader."""

from __future__ import annotations

import pytest
from nats.js.errors import KeyNotFoundError

from natsflow.actors.jetstream.summaries import MAX_BATCH, SummaryFeed
from natsflow.actors.jetstream.topology import (
    EVENTS_STREAM,
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
)
from natsflow.events.errors import NotFound
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, running
from tests.integration.test_index import synthetic, write_summaries

KEPT_BRIEFLY = """
name: brief
retention: 2s
steps:
  one: {action: noop}
"""
KEPT_FOREVER = """
name: forever
steps:
  one: {action: noop}
"""
NAPPER = """
name: napper
retention: 2s
steps:
  nap:
    action: sleep
    with: {duration: 1h}
"""


async def stored(engine: Engine, stream: str, execution: str) -> int:
    """Messages of ``execution`` still in ``stream`` (any of its subjects)."""
    js = engine.nc.jetstream()
    info = await js.stream_info(stream, subjects_filter=f"natsflow.*.{execution}")
    more = await js.stream_info(stream, subjects_filter=f"natsflow.*.*.{execution}")
    return sum((info.state.subjects or {}).values()) + sum((more.state.subjects or {}).values())


async def test_finished_executions_past_retention_leave_the_streams(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server, retention_every=1.0) as engine:
        for manifest in (KEPT_BRIEFLY, KEPT_FOREVER, NAPPER):
            await engine.deploy(manifest)
        brief = [await engine.start("brief", key=f"k{i}") for i in range(3)]
        forever = await engine.start("forever")
        napper = await engine.start("napper")
        for execution in [*brief, forever]:
            await engine.wait_done(execution)
        await engine.wait_for(napper, ("running",), 10)
        assert await stored(engine, EVENTS_STREAM, brief[0]) > 0

        async def all_expired() -> None:
            rows = await engine.ls(status="expired")
            assert sorted(r["execution_id"] for r in rows) == sorted(brief)

        await eventually(all_expired, within=30)

        js = engine.nc.jetstream()
        kv = await js.key_value(EXECUTIONS_BUCKET)
        for execution in brief:
            assert await stored(engine, EVENTS_STREAM, execution) == 0  # events, snapshot
            assert await stored(engine, INBOX_STREAM, execution) == 0
            with pytest.raises(KeyNotFoundError):
                await kv.get(execution)  # the summary is gone (a tombstone marker only)
            with pytest.raises(NotFound, match=r"expired at .*retention"):
                await engine.show(execution)
            with pytest.raises(NotFound, match="expired"):
                await engine.history(execution)
        # the idempotency key still maps to its execution: no new one starts
        again = await engine.start_full("brief", key="k0")
        assert again["execution_id"] == brief[0]
        assert again["created"] is False
        # without retention, and running: kept
        assert (await engine.show(forever))["status"] == "completed"
        assert await stored(engine, EVENTS_STREAM, forever) > 0
        assert (await engine.show(napper))["status"] == "running"
        rows = {r["execution_id"]: r["status"] for r in await engine.ls()}
        assert rows[forever] == "completed"
        assert rows[napper] == "running"
        assert await engine.ls(status="expired", workflow="forever") == []


async def test_catch_up_reader_holds_one_batch_at_a_time(nats_server: EmbeddedServer) -> None:
    """12,000 summaries read from sequence 0: every change once, in order, in batches of
    at most ``MAX_BATCH`` (the reader's memory is bounded by it, not by the backlog)."""
    written = synthetic(12_000, prefix="bounded")
    async with running(nats_server) as engine:
        await write_summaries(engine.nc, written)
        feed = SummaryFeed(engine.nc, engine.nc.jetstream())
        seen: list[str] = []
        last = 0
        batches = feed.changes(0, idle=0.5)
        try:
            async for batch in batches:
                if not batch.changes:
                    break
                assert len(batch.changes) <= MAX_BATCH
                for change in batch.changes:
                    assert change.seq > last
                    last = change.seq
                    seen.append(change.execution)
        finally:
            await batches.aclose()
    ours = [e for e in seen if e.startswith("bounded-")]
    assert len(ours) == len(set(ours)) == 12_000
