"""Retention: finished executions past their workflow's ``retention`` leave the streams.

A workflow's latest deployed version says how long its finished executions are
kept (``retention: 30d``; none: forever). Sweeps come from one ``@every``
message schedule in the server, taken through a shared durable consumer with
one message in flight (``actors.jetstream.retention``): one instance at a time
runs a sweep, no instance polls, and a restart loses nothing.

A sweep asks this instance's execution index for each workflow's executions
that finished more than ``retention`` ago (oldest first, at most ``SWEEP_LIMIT``
in all: bounded work, the next sweep goes on), and expires each: its summary
becomes a tombstone (``ls --status expired``; ``show`` says when it expired),
then its events, snapshot and inbox messages are purged. Each is checked against
its summary first, so an index that lags never expires a running or resumed
execution.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.index import ExecutionIndex
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.puller import Puller, ack
from natsflow.actors.jetstream.retention import ensure_sweeps, expire
from natsflow.actors.jetstream.topology import RETENTION_CONSUMER, SCHEDULES_STREAM
from natsflow.actors.metrics import Metrics
from natsflow.events.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

SWEEP_LIMIT = 500
"""Most executions one sweep expires (the rest wait for the next sweep)."""


class Retention:
    """Take retention sweeps (one instance at a time) and expire what is due."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        definitions: Definitions,
        index: ExecutionIndex,
        metrics: Metrics,
        *,
        every: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._definitions = definitions
        self._index = index
        self._metrics = metrics
        self._every = every
        self._clock = clock

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Set the sweeps' schedule, then take sweeps until cancelled."""
        await ensure_sweeps(self._js, self._every)
        puller = Puller(self._nc, SCHEDULES_STREAM, RETENTION_CONSUMER, self._on_sweep, batch=1)
        await puller.run(task_status=task_status)

    async def _on_sweep(self, msg: Msg) -> None:
        sent = msg.metadata.timestamp
        late = sent is not None and (
            dt.datetime.now(dt.UTC) - sent > dt.timedelta(seconds=2 * self._every)
        )
        if not late:  # sweeps piled up while no instance ran: the latest one does it all
            try:
                await self.sweep()
            except Unavailable as exc:
                log.warning("retention sweep stopped: %s (the next sweep goes on)", exc)
        await ack(self._nc, msg)

    async def sweep(self, limit: int = SWEEP_LIMIT) -> int:
        """Expire up to ``limit`` executions past their workflow's retention; how many."""
        now = self._clock()
        expired = 0
        for deployed in await self._definitions.list():
            name = deployed["workflow"]
            try:
                _, definition = await self._definitions.latest(name)
            except NotFound:
                continue  # deleted meanwhile
            if definition.retention is None or expired >= limit:
                continue
            before = now - definition.retention
            for execution in await self._index.expirable(name, before, limit - expired):
                if await expire(self._js, execution, before, now):
                    expired += 1
                    self._metrics.child(self._metrics.retention_expired, name).inc()
        if expired:
            log.info("retention: %d finished executions expired", expired)
        return expired
