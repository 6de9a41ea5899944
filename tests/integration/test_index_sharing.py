"""Two instances on one data directory share one index file: one follows the summaries
(it holds ``index.lock``), the other answers from the same file. Against a real
nats-server that goes away and comes back."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats

from natsflow.actors.index import INDEX_FILE, ExecutionIndex
from natsflow.actors.jetstream.summaries import StreamPosition, SummaryFeed
from natsflow.actors.jetstream.topology import EXECUTIONS_BUCKET, provision
from natsflow.events.errors import Unavailable
from natsflow.events.listing import ExecutionFilter
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import Engine, connect, running
from tests.integration.test_index import synthetic, write_summaries


class CountingFeed(SummaryFeed):
    """The real feed, counting the times NATS did not answer where the stream is."""

    unanswered = 0

    async def position(self) -> StreamPosition | None:
        try:
            return await super().position()
        except Unavailable:
            self.unanswered += 1
            raise


async def no_total(workflow: str, version: str) -> int | None:
    return None


async def test_the_instance_that_does_not_follow_outlives_a_nats_outage(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    path = tmp_path / INDEX_FILE
    options = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.2}
    follower_nc = await nats.connect(nats_server.url, **options)
    other_nc = await nats.connect(nats_server.url, **options)
    try:
        await provision(follower_nc.jetstream(), ack_wait=30)
        follower = ExecutionIndex(path, SummaryFeed(follower_nc, follower_nc.jetstream()), no_total)
        feed = CountingFeed(other_nc, other_nc.jetstream(timeout=1))
        other = ExecutionIndex(path, feed, no_total)
        async with anyio.create_task_group() as tg:
            await tg.start(follower.run)
            await tg.start(other.run)  # the lock is taken: it answers from the file

            await nats_server.stop()

            async def unanswered() -> None:
                assert feed.unanswered > 0

            await eventually(unanswered, within=20)
            await nats_server.start()

            await write_summaries(follower_nc, synthetic(30))

            async def listed() -> None:
                await other.wait_caught_up()
                assert await other.count(ExecutionFilter()) == 30

            # The follower's ordered consumer resumes once nats-py sees its heartbeats
            # missed (about 18 s after the restart here).
            await eventually(listed, within=60, ignoring=(Unavailable,))
            tg.cancel_scope.cancel()
    finally:
        await follower_nc.close()
        await other_nc.close()


async def test_a_summaries_stream_created_anew_and_longer_is_followed_from_its_start(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with running(nats_server, data_dir=str(data)) as engine:
        await write_summaries(engine.nc, synthetic(10, prefix="old"))
        await eventually(lambda: _counted(engine, 10), within=20)
        # The bucket is made anew (a new server, a deleted stream) while no service runs...
    async with connect(nats_server.url) as engine:
        await engine.nc.jetstream().delete_key_value(EXECUTIONS_BUCKET)
        await provision(engine.nc.jetstream(), ack_wait=30)
        # ... and holds more changes than the file's cursor: only its start time tells.
        await write_summaries(engine.nc, synthetic(25, prefix="new"))
    async with running(nats_server, data_dir=str(data)) as engine:
        await eventually(lambda: _counted(engine, 25), within=20)
        rows = await engine.client.ls_page(limit=100)
        assert {r.execution_id.split("-")[0] for r in rows.executions} == {"new"}


async def _counted(engine: Engine, n: int) -> None:
    assert (await engine.client.ls_page(count=True)).count == n


async def test_a_summaries_stream_created_anew_while_followed_is_followed_from_its_start(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    async with running(nats_server, data_dir=str(tmp_path / "data")) as engine:
        await write_summaries(engine.nc, synthetic(10, prefix="old"))
        await eventually(lambda: _counted(engine, 10), within=20)
        js = engine.nc.jetstream()
        await js.delete_key_value(EXECUTIONS_BUCKET)
        await provision(js, ack_wait=30)
        await write_summaries(engine.nc, synthetic(25, prefix="new"))
        await eventually(lambda: _counted(engine, 25), within=30)
        rows = await engine.client.ls_page(limit=100)
        assert {r.execution_id.split("-")[0] for r in rows.executions} == {"new"}
