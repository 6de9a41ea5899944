"""The execution index: a local SQLite read model of every execution's summary.

``ExecutionIndex.run`` opens (or makes) ``<data dir>/index.sqlite3`` and follows
the summaries' stream from the cursor stored in it, applying each batch of
changes and the cursor in one transaction (``db.apply``). ``ls`` and ``stats``
read the file (``select``, ``count``, ``stats``); ``show`` does not: it reads the
execution's own history.

One process follows a file at a time: the one holding ``index.lock`` (an
``flock``). Another instance sharing the data directory answers queries from the
same file and takes the lock over if the follower stops. ``natsflow index
rebuild`` empties the file and bumps its generation: a follower notices at its
next batch (or within a second when idle) and starts over from sequence 0; with
no follower, the rebuild catches up itself.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import IO

import aiosqlite
import anyio
from anyio.abc import TaskStatus

from natsflow.actors.index import db
from natsflow.actors.jetstream.summaries import StreamPosition, SummaryChange, SummaryFeed
from natsflow.actors.metrics import Metrics
from natsflow.events.errors import Unavailable
from natsflow.events.listing import Cursor, ExecutionFilter
from natsflow.events.views import ExecutionSummary

log = logging.getLogger(__name__)

StepsIn = Callable[[str, str], Awaitable[int | None]]
"""How many steps a workflow version has (None: unknown): the rows' ``steps_total``."""

CATCH_UP_WAIT = 2.0
"""Longest a query waits for the index to reach the stream's end as it was asked."""
NEAR = 10_000
"""A query waits for the index only when it is at most this many changes behind."""


class ExecutionIndex:
    """One process's execution index: follows the summaries, answers ``ls`` and ``stats``."""

    def __init__(
        self, path: Path, feed: SummaryFeed, steps_in: StepsIn, metrics: Metrics | None = None
    ) -> None:
        self.path = path
        self._feed = feed
        self._steps_in = steps_in
        self._metrics = metrics
        self._db: aiosqlite.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._state = db.IndexState(0, "", 0)
        self._advanced = anyio.Event()
        self._totals: db.Totals = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the index (rebuilt if missing or corrupt) and keep it up to date until
        cancelled; started as soon as it can answer queries."""
        await self._open()
        task_status.started()
        try:
            while True:
                if not self._take_lock():
                    try:
                        await self._watch_other_follower()
                    except Unavailable as exc:  # as the follower does: NATS comes back
                        log.warning("execution index: %s; retrying in 1s", exc)
                        await anyio.sleep(1)
                    continue
                try:
                    await self._follow()
                except db.Stale:
                    log.info("execution index %s rebuilt: following from 0", self.path)
                    self._count_rebuild("asked")
                except Unavailable as exc:
                    log.warning("execution index: %s; retrying in 1s", exc)
                    await anyio.sleep(1)
                except sqlite3.DatabaseError as exc:
                    log.error("execution index %s failed (%s): rebuilding it", self.path, exc)
                    await self._close_db()
                    db.set_aside(self.path)
                    await self._open()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_db()
                if self._lock is not None:
                    self._lock.close()  # releases the flock

    async def _open(self) -> None:
        self._db, reason = await db.open_index(self.path)
        self._state = await db.read_state(self._db)
        if reason in ("corrupt", "schema"):
            self._count_rebuild(reason)
        elif reason == "missing":
            log.info("execution index %s: new file, built from the summaries", self.path)
            self._count_rebuild(reason)

    async def _close_db(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _count_rebuild(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.child(self._metrics.index_rebuilds, reason).inc()

    def _take_lock(self) -> bool:
        if self._lock is not None:
            return True
        handle = self.path.with_name(self.path.name + ".lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        return True

    async def _watch_other_follower(self) -> None:
        """Another process follows the file: report its lag, try the lock again in 1s."""
        position = await self._feed.position()
        self._state = await db.read_state(self._connection())
        self._set_lag(position, None)
        self._signal()
        await anyio.sleep(1)

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise Unavailable(f"the execution index {self.path} is being reopened: retry")
        return self._db

    async def _follow(self) -> None:
        connection = self._connection()
        position = await self._feed.position()
        if position is None:
            await anyio.sleep(1)  # the bucket is provisioned at start: soon there
            return
        state = await db.read_state(connection)
        if state.stream != position.created or state.cursor > position.last_seq:
            if state.stream:  # a different stream than the one the file followed
                log.warning(
                    "execution index %s: the summaries' stream is new: rebuilding", self.path
                )
                self._count_rebuild("stream")
            state = await db.reset(connection, position.created, bump=False)
        self._state = state
        self._set_lag(position, None)
        async with aclosing(self._feed.changes(state.cursor)) as batches:
            async for batch in batches:
                if batch.changes:
                    await self._apply(connection, batch.changes)
                    self._set_lag(None, batch.pending)
                else:  # idle: a rebuild asked meanwhile?
                    if (await db.read_state(connection)).generation != state.generation:
                        raise db.Stale
                    self._set_lag(None, 0)
                    # Or the stream made anew (its bucket deleted and provisioned again):
                    # nats-py's ordered consumer would go on at our cursor in the new one.
                    now = await self._feed.position()
                    if now is not None and now.created != state.stream:
                        return  # _follow again: it starts the new stream from 0

    async def _apply(
        self, connection: aiosqlite.Connection, changes: tuple[SummaryChange, ...]
    ) -> None:
        for change in changes:
            s = change.summary
            if s is not None and (s.workflow, s.version) not in self._totals:
                self._totals[(s.workflow, s.version)] = await self._steps_in(s.workflow, s.version)
        cursor = await db.apply(connection, self._state.generation, changes, self._totals)
        self._state.cursor = cursor
        if self._metrics is not None:
            self._metrics.index_applied.inc(len(changes))
        self._signal()

    def _signal(self) -> None:
        self._advanced.set()
        self._advanced = anyio.Event()

    def _set_lag(self, position: StreamPosition | None, pending: int | None) -> None:
        if pending is None:
            pending = max(0, position.last_seq - self._state.cursor) if position else 0
        self.lag = pending
        if self._metrics is not None:
            self._metrics.index_lag.set(pending)

    lag: int = 0
    """Changes not applied yet when last seen (the metric ``natsflow_index_lag``)."""

    @property
    def cursor(self) -> int:
        """The stream sequence of the last change applied."""
        return self._state.cursor

    async def wait_caught_up(self, within: float = CATCH_UP_WAIT) -> int:
        """Wait (up to ``within`` s) until the index has applied every change the stream
        held when asked, so ``ls`` right after a start lists it; answer at once when far
        behind (catching up). The changes still not applied."""
        position = await self._feed.position()
        if position is None:
            return 0
        target = position.last_seq
        if target - self.cursor > NEAR:
            return target - self.cursor
        with anyio.move_on_after(within):
            while self.cursor < target:
                if self._lock is None:  # another process follows: read where it is
                    self._state = await db.read_state(self._connection())
                    await anyio.sleep(0.02)
                else:
                    await self._advanced.wait()
        return max(0, target - self.cursor)

    async def select(self, query: ExecutionFilter) -> tuple[list[ExecutionSummary], Cursor | None]:
        return await db.select(self._connection(), query)

    async def count(self, query: ExecutionFilter) -> int:
        return await db.count(self._connection(), query)

    async def stats(self, query: ExecutionFilter) -> list[tuple[str, str, int]]:
        return await db.stats(self._connection(), query)

    async def expirable(self, workflow: str, before: float, limit: int) -> list[str]:
        """Retention's candidates of ``workflow`` (``db.expirable``)."""
        return await db.expirable(self._connection(), workflow, before, limit)

    async def row(self, execution: str) -> ExecutionSummary | None:
        """This index's row of ``execution`` (an expired one's tombstone included)."""
        return await db.row(self._connection(), execution)


async def rebuild(path: Path, feed: SummaryFeed, steps_in: StepsIn) -> int:
    """``natsflow index rebuild``: empty the index at ``path`` and fill it again from the
    summaries' stream, up to its end as it is now; the rows it then holds.

    If a service follows that file, it is told (a new generation) and does the work;
    this waits until it has. Otherwise the catch-up runs here."""
    position = await feed.position()
    if position is None:
        raise Unavailable("the summaries' stream does not exist yet: start the service once")
    index = ExecutionIndex(path, feed, steps_in)
    await index._open()
    try:
        connection = index._connection()
        index._state = await db.reset(connection, position.created, bump=True)
        if index._take_lock():
            async with aclosing(feed.changes(0, idle=0.5)) as batches:
                async for batch in batches:
                    if batch.changes:
                        await index._apply(connection, batch.changes)
                    if index.cursor >= position.last_seq or not batch.changes:
                        break
        else:
            # The follower is another process: its progress is in the file alone.
            while (await db.read_state(connection)).cursor < position.last_seq:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        return await db.count(connection, ExecutionFilter())
    finally:
        await index._close_db()
        if index._lock is not None:
            index._lock.close()
