"""The queue-depth gauges of custom actions, read from their consumers when metrics are
scraped (``Metrics.refresh``), at most once per ``min_interval`` seconds."""

from __future__ import annotations

import logging
import time

import anyio
from nats.js import JetStreamContext

from natsflow.actors.jetstream.action_queues import action_queues
from natsflow.actors.metrics import Metrics
from natsflow.events.errors import Unavailable

log = logging.getLogger(__name__)


class QueueGauges:
    """Sets ``natsflow_action_queue_depth`` and ``natsflow_action_workers_pulling`` per
    custom action; an action whose consumer is gone loses its series."""

    def __init__(self, js: JetStreamContext, metrics: Metrics, *, min_interval: float = 1.0):
        self._js = js
        self._metrics = metrics
        self._min_interval = min_interval
        self._last = -min_interval
        self._shown: set[str] = set()

    async def refresh(self) -> None:
        """Read every custom action's consumer (a scrape waits at most 2 s for it; the
        gauges keep their last values when NATS does not answer)."""
        if time.monotonic() - self._last < self._min_interval:
            return
        self._last = time.monotonic()
        queues = None
        with anyio.move_on_after(2):
            try:
                queues = await action_queues(self._js)
            except Unavailable as exc:
                log.info("custom actions' queue depth not read: %s", exc)
        if queues is None:
            return
        depth, pulling = self._metrics.action_queue_depth, self._metrics.action_workers_pulling
        for action, queue in queues.items():
            depth.labels(action).set(queue.queued)
            pulling.labels(action).set(queue.pulling)
        for gone in self._shown - set(queues):
            depth.remove(gone)
            pulling.remove(gone)
        self._shown = set(queues)
