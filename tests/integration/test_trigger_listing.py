"""``natsflow triggers`` and the trigger and schedule metrics, against a real nats-server:
pending messages of an enabled and a disabled workflow, a schedule's next due time
and last fire, over the Client, the CLI and HTTP."""

from __future__ import annotations

from functools import partial
from typing import Any

import aiohttp
import msgspec
import orjson
from nats.aio.client import Client as Nats

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.schedules import Fire, current_fire
from natsflow.actors.jetstream.topology import provision
from natsflow.actors.metrics import Metrics
from natsflow.actors.scheduler import Scheduler
from natsflow.actors.starter import Starter
from natsflow.manifests.loader import parse_manifest
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import Engine, running
from tests.integration.test_cli import natsflow

LIVE = """\
name: live
triggers:
  - subject: "live.in"
steps:
  a: {action: noop}
"""

PAUSED = """\
name: paused
enabled: false
triggers:
  - subject: "paused.*"
steps:
  a: {action: noop}
"""

TICK = """\
name: tick
triggers:
  - every: 1s
steps:
  a: {action: noop}
"""

NIGHTLY = """\
name: nightly
triggers:
  - cron: "0 3 * * *"
    timezone: Europe/Paris
steps:
  a: {action: noop}
"""


def _by_workflow(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["workflow"]: row for row in rows}


async def _deploy_and_publish(engine: Engine) -> None:
    for manifest in (LIVE, PAUSED, TICK, NIGHTLY):
        await engine.deploy(manifest)
    for n in range(3):
        await engine.nc.publish(f"paused.p{n}", orjson.dumps({"n": n}))
    for n in range(2):
        await engine.nc.publish("live.in", orjson.dumps({"n": n}))
    await engine.nc.flush()


def _check(rows: list[dict[str, Any]], ids: dict[str, set[str]]) -> None:
    """What every front end must show once ``live`` took its messages and ``tick`` fired."""
    by = _by_workflow(rows)
    assert set(by) == {"live", "paused", "tick", "nightly"}, rows
    live, paused, tick, nightly = by["live"], by["paused"], by["tick"], by["nightly"]
    assert (live["kind"], live["subject"], live["enabled"]) == ("subject", "live.in", True)
    assert live["pending"] == 0, live
    assert live["last_fired_at"] is not None, live
    assert (paused["kind"], paused["subject"], paused["enabled"]) == ("subject", "paused.*", False)
    assert paused["pending"] == 3, paused
    assert paused.get("last_fired_at") is None, paused
    assert "disabled" in paused["note"], paused
    assert (tick["kind"], tick["schedule"], tick.get("timezone")) == ("every", "1s", None)
    assert tick["last_execution"] in ids["tick"], (tick, ids)
    assert tick["next_due"] > tick["last_fired_at"], tick
    assert (nightly["kind"], nightly["schedule"], nightly["timezone"]) == (
        "cron",
        "0 3 * * *",
        "Europe/Paris",
    )
    assert nightly["next_due"] is not None, nightly
    assert nightly.get("last_fired_at") is None, nightly
    assert all(row["version"] for row in rows), rows


async def test_triggers_lists_pending_messages_and_fires_over_client_cli_and_http(
    nats_server: EmbeddedServer,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        await _deploy_and_publish(engine)

        async def listed() -> None:
            rows = msgspec.to_builtins((await engine.client.triggers()).triggers)
            ids = {"tick": {r["execution_id"] for r in await engine.ls(workflow="tick")}}
            assert len(await engine.ls(workflow="live")) == 2
            _check(rows, ids)

        await eventually(listed, within=20, interval=0.2)
        # The same over the CLI (plain and --json) and HTTP.
        # (ids read after each listing: the 1 s schedule may fire while the CLI starts)
        run = await natsflow(engine, "triggers", "--json")
        assert run.code == 0, run
        ids = {"tick": {r["execution_id"] for r in await engine.ls(workflow="tick")}}
        _check(orjson.loads(run.out)["triggers"], ids)
        plain = await natsflow(engine, "triggers")
        assert plain.code == 0, plain
        assert "paused.*" in plain.out, plain.out
        assert "(disabled)" in plain.out, plain.out
        assert "0 3 * * * (Europe/Paris)" in plain.out, plain.out
        async with http.get(f"{base}/v1/triggers") as resp:
            assert resp.status == 200
            body = await resp.json()
        ids = {"tick": {r["execution_id"] for r in await engine.ls(workflow="tick")}}
        _check(body["triggers"], ids)

        async def counted() -> str:
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'natsflow_schedule_fires_total{outcome="started"}' in text
            assert 'natsflow_trigger_messages_total{outcome="accepted"} 2.0' in text
            return text

        await eventually(counted, within=10)


async def test_enabling_a_workflow_takes_its_waiting_messages_and_the_listing_follows(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(PAUSED)
        for n in range(4):
            await engine.nc.publish(f"paused.p{n}", orjson.dumps({"n": n}))
        await engine.nc.flush()

        async def pending(count: int) -> dict[str, Any]:
            row: dict[str, Any] = msgspec.to_builtins((await engine.client.triggers()).triggers[0])
            assert row["pending"] == count, row
            return row

        await eventually(lambda: pending(4), within=10)
        await engine.deploy(PAUSED.replace("enabled: false\n", ""))
        row = await eventually(lambda: pending(0), within=20, interval=0.1)
        assert row["enabled"] is True, row
        assert row.get("note") is None, row
        assert row["last_fired_at"] is not None, row
        assert len(await engine.ls(workflow="paused")) == 4


async def test_schedule_fires_are_counted_by_outcome(nats_server: EmbeddedServer, nc: Nats) -> None:
    """A scheduler taking fires itself (no service running): on time, again, late, stale."""
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    definitions = Definitions(js)
    version, _ = await definitions.deploy(parse_manifest(TICK, "yaml"))
    starter = Starter(definitions, Publisher(nc), IdempotencyKeys(js), partial(read_summary, js))
    now = [1_000_000.0]
    metrics = Metrics()
    scheduler = Scheduler(
        nc,
        js,
        definitions,
        starter,
        partial(read_summary, js),
        metrics=metrics,
        clock=lambda: now[0],
    )
    on_time = Fire(workflow="tick", version=version, trigger=0, due=now[0])
    await scheduler.fired(on_time)
    await scheduler.fired(on_time)  # taken again (a redelivery): the same execution
    now[0] += 3600  # a due time taken an hour late: catchup: skip
    await scheduler.fired(msgspec.structs.replace(on_time, due=now[0] - 3600))
    await scheduler.fired(msgspec.structs.replace(on_time, version="replaced"))
    counted = {
        outcome: metrics.registry.get_sample_value(
            "natsflow_schedule_fires_total", {"outcome": outcome}
        )
        for outcome in ("started", "deduplicated", "missed", "dropped", "overlap", "refused")
    }
    assert counted == {
        "started": 1,
        "deduplicated": 1,
        "missed": 1,
        "dropped": 1,
        "overlap": None,  # never counted: no sample
        "refused": None,
    }
    # The schedule message now carries the last start, as `triggers` shows it.
    _, fire = await current_fire(js, "tick", 0)
    assert fire is not None
    assert fire.started_at == 1_000_000.0
    assert fire.previous is not None
