"""``natsflow index rebuild``: refill this machine's execution index from the streams.

It runs here, on the index file under the data directory, with a NATS
connection of its own: if a ``natsflow serve`` follows that file, the service
is told (a new generation in the file) and rebuilds while it goes on serving;
otherwise the rebuild catches up here. Either way it returns once the index
holds every summary the stream held when it was asked.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import nats

from natsflow.actors.index import INDEX_FILE, rebuild
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.summaries import SummaryFeed
from natsflow.events.errors import Unavailable
from natsflow.service.app import steps_in


async def rebuild_index(url: str, data_dir: str) -> str:
    """Rebuild ``<data_dir>/index.sqlite3`` from the summaries at ``url``; what was done."""
    path = Path(data_dir) / INDEX_FILE
    try:
        nc = await nats.connect(servers=url.split(","), connect_timeout=3, max_reconnect_attempts=0)
    except Exception as exc:  # nats-py raises many kinds here; the CLI says which
        raise Unavailable(f"cannot connect to NATS at {url}: {exc or type(exc).__name__}") from None
    try:
        js = nc.jetstream(timeout=10)
        started = time.perf_counter()
        rows = await rebuild(path, SummaryFeed(nc, js), partial(steps_in, Definitions(js)))
        took = time.perf_counter() - started
    finally:
        await nc.close()
    return f"rebuilt {path}: {rows} executions in {took:.1f}s"
