"""Schedule triggers against a real nats-server: one execution per due time, across
restarts and instances; catch-up after a gap; deploy-time refusal; redeploys."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.schedules import current_fire, decode_fire
from natsflow.actors.jetstream.topology import SCHEDULES_STREAM, fire_subject
from natsflow.events.errors import ManifestError, NotFound, Unavailable
from natsflow.manifests.schedules import rfc3339
from natsflow.service.app import serve
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, connect, running, service_config
from tests.integration.test_cli import natsflow

TICK = """
name: tick
triggers:
  - every: 1s
    input: {source: clock}
    catchup: {catchup}
steps:
  a: {{action: noop}}
"""


def tick(catchup: str = "skip") -> str:
    return TICK.replace("{catchup}", catchup).replace("{{", "{").replace("}}", "}")


class Instance:
    """One in-process natsflow service that a test can stop (drain) and start again."""

    def __init__(self, tg: anyio.abc.TaskGroup, url: str) -> None:
        self._tg, self._config = tg, service_config(url)
        self._stopping: anyio.Event | None = None
        self._stopped = anyio.Event()

    async def start(self) -> None:
        self._stopping, self._stopped = anyio.Event(), anyio.Event()
        await self._tg.start(self._serve, self._stopping, self._stopped)

    async def _serve(
        self,
        stopping: anyio.Event,
        stopped: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await serve(self._config, stopping=stopping, task_status=task_status)
        finally:
            stopped.set()

    async def stop(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        await self._stopped.wait()


@asynccontextmanager
async def instances(server: EmbeddedServer, n: int) -> AsyncIterator[tuple[Engine, list[Instance]]]:
    async with anyio.create_task_group() as tg:
        services = [Instance(tg, server.url) for _ in range(n)]
        for service in services:
            await service.start()
        async with connect(server.url) as engine:
            yield engine, services
        tg.cancel_scope.cancel()


async def scheduled(engine: Engine, workflow: str = "tick") -> list[str]:
    """The ``scheduled_at`` of every execution of ``workflow`` (one entry per execution)."""
    rows = await engine.ls(workflow=workflow)
    inputs = [(await engine.show(row["execution_id"]))["input"] for row in rows]
    assert all(i["source"] == "clock" for i in inputs), inputs
    return [i["scheduled_at"] for i in inputs]


async def at_least(engine: Engine, n: int, within: float = 15) -> list[str]:
    async def enough() -> list[str]:
        times = await scheduled(engine)
        assert len(times) >= n, f"{len(times)} executions so far, waiting for {n}"
        return times

    return await eventually(enough, within=within, ignoring=(Unavailable, NotFound))


def assert_once_each(times: list[str]) -> None:
    twice = [t for t, n in Counter(times).items() if n > 1]
    assert not twice, f"due times started more than once: {twice}"
    assert all(t.endswith(".000Z") for t in times), times  # due times, not fire times


async def test_every_second_once_per_due_time_across_a_restart_with_two_instances(
    nats_server: EmbeddedServer,
) -> None:
    async with instances(nats_server, 2) as (engine, (first, _second)):
        await engine.deploy(tick())
        before = len(await at_least(engine, 2))
        await first.stop()  # drained: the other instance goes on alone
        during = len(await at_least(engine, before + 2))
        await first.start()
        await at_least(engine, during + 3)
        await engine.deploy(tick())  # the same version again: the chain is not doubled
        times = await at_least(engine, during + 5)
    assert_once_each(times)


async def pending_fire_missed(engine: Engine) -> float:
    """Wait until a fire is waiting for a stopped service and its due time is missed
    (the next one has passed); return that due time."""
    js = engine.nc.jetstream()

    async def missed() -> float:
        try:
            msg = await js.get_last_msg(SCHEDULES_STREAM, fire_subject("tick", 0))
        except NotFoundError:
            raise AssertionError("no fire waiting yet") from None
        due = decode_fire(msg.data or b"").due
        assert time.time() > due + 1.5, "the fire is not late yet"
        return due

    return await eventually(missed, within=10)


@pytest.mark.parametrize("catchup", ["once", "skip"])
async def test_catchup_after_a_gap_with_no_instance_running(
    nats_server: EmbeddedServer, catchup: str
) -> None:
    async with instances(nats_server, 1) as (engine, (service,)):
        await engine.deploy(tick(catchup))
        await at_least(engine, 1)
        await service.stop()
        stopped = rfc3339(time.time())
        missed = rfc3339(await pending_fire_missed(engine))
        restarted = rfc3339(time.time())
        await service.start()

        async def on_time_again() -> list[str]:
            times = await scheduled(engine)
            assert max(times) > restarted, "no due time after the restart started yet"
            return times

        times = await eventually(on_time_again, within=15, ignoring=(Unavailable, NotFound))
    assert_once_each(times)
    in_gap = sorted(t for t in times if stopped < t < restarted)
    if catchup == "once":
        assert missed in times, f"the missed due time {missed} did not start: {sorted(times)}"
        assert set(in_gap) <= {missed}, f"one execution for the gap expected: {sorted(times)}"
    else:
        assert missed not in times, f"the missed {missed} started: {sorted(times)}"
        assert in_gap == [], f"no execution for the gap expected: {sorted(times)}"


async def test_disabling_and_a_new_version_replace_the_schedule(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        js = engine.nc.jetstream()
        first = await engine.deploy(tick())
        await at_least(engine, 1)

        async def schedule_of(version: str | None) -> None:
            _, fire = await current_fire(js, "tick", 0)
            assert (fire.version if fire else None) == version, fire

        await eventually(partial(schedule_of, first["version"]), within=5)
        disabled = await engine.deploy(tick().replace("name: tick", "name: tick\nenabled: false"))
        await eventually(partial(schedule_of, None), within=5)
        count = len(await scheduled(engine))
        again = await engine.deploy(tick("once"))
        assert again["version"] not in (first["version"], disabled["version"])
        await eventually(partial(schedule_of, again["version"]), within=5)
        times = await at_least(engine, count + 2)
        rows = await engine.ls(workflow="tick")
    assert_once_each(times)
    assert {r["version"] for r in rows} == {first["version"], again["version"]}


INVALID = """
name: bad-schedule
triggers:
  - cron: "every tuesday-ish"
  - cron: "0 9 * * *"
    timezone: Mars/Olympus_Mons
steps:
  a: {action: noop}
"""


async def test_invalid_cron_and_time_zone_exit_2_nothing_deployed(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad-schedule.yaml"
    manifest.write_text(INVALID)
    async with running(nats_server) as engine:
        run = await natsflow(engine, "deploy", str(manifest))
        with pytest.raises(ManifestError) as api:
            await engine.deploy(INVALID)
        listed = await natsflow(engine, "workflows", "--json")
    assert run.code == 2, run
    assert 'triggers[0].cron: invalid cron expression "every tuesday-ish"' in run.err
    assert 'triggers[1].timezone: unknown time zone "Mars/Olympus_Mons"' in run.err
    assert any("triggers[0].cron" in p for p in api.value.problems)
    assert "bad-schedule" not in [w["workflow"] for w in listed.json()]


NAPS = """
name: naps
triggers:
  - every: 1s
    overlap: skip
steps:
  nap: {action: sleep, with: {duration: 2s}}
"""


async def test_overlap_skip_starts_nothing_while_the_previous_runs(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(NAPS)

        async def two_finished() -> list[dict[str, Any]]:
            rows = await engine.ls(workflow="naps")
            done = [r for r in rows if r["status"] == "completed"]
            assert len(done) >= 2, rows
            return sorted(rows, key=lambda r: r["started_at"])

        rows = await eventually(two_finished, within=20)
    for earlier, later in itertools.pairwise(rows):
        assert earlier["finished_at"] is not None, rows
        assert later["started_at"] >= earlier["finished_at"], f"overlapping: {rows}"


QUEUED = NAPS.replace("name: naps", "name: queued").replace("overlap: skip", "overlap: queue")


async def test_overlap_queue_starts_a_due_time_when_the_previous_ends(
    nats_server: EmbeddedServer,
) -> None:
    """Each execution starts after the one before ended, and is for a due time that came
    while that one still ran (queued, not skipped as with ``overlap: skip``)."""
    async with running(nats_server) as engine:
        await engine.deploy(QUEUED)

        async def three_finished() -> list[dict[str, Any]]:
            rows = await engine.ls(workflow="queued")
            done = [r for r in rows if r["status"] == "completed"]
            assert len(done) >= 3, rows
            return sorted(done, key=lambda r: r["started_at"])

        async def listed_waiting() -> None:
            rows = (await engine.client.triggers()).triggers
            assert len(rows) == 1, rows  # listed once the deploy is seen
            row = rows[0]
            assert row.note is not None, row
            assert "to end (overlap: queue)" in row.note, row

        await eventually(listed_waiting, within=10, interval=0.1)
        rows = await eventually(three_finished, within=30)
        views = [await engine.show(row["execution_id"]) for row in rows]
    for earlier, later in itertools.pairwise(views):
        assert later["started_at"] >= earlier["finished_at"], f"overlapping: {views}"
        due = later["input"]["scheduled_at"]
        assert due < rfc3339(earlier["finished_at"]), f"{due} did not wait: {views}"
