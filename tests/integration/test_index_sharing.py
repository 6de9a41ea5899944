"""Two instances on one data directory share one index file: one follows the summaries
(it holds ``index.lock``), the other answers from the same file. Against a real
nats-server that goes away and comes back."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats

from natsflow.actors.index import INDEX_FILE, ExecutionIndex
from natsflow.actors.jetstream.summaries import StreamPosition, SummaryFeed
from natsflow.actors.jetstream.topology import provision
from natsflow.events.errors import Unavailable
from natsflow.events.listing import ExecutionFilter
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
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
