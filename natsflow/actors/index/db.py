"""The execution index's SQLite file: schema, applying changes, and the queries.

One row per execution (``executions``), and in ``meta`` the stream sequence of
the last change applied (``cursor``), the summaries' stream it came from
(``stream``: its creation time) and a ``generation`` that ``natsflow index
rebuild`` bumps. A batch of changes and the cursor after it are written in
one transaction, so a kill at any moment leaves the rows and the cursor
agreeing: the next start goes on from the cursor, and no change is applied
twice or skipped. A row keeps the sequence of the change it holds (``seq``).

``open_index`` never fails on a bad file: one that is not a database, has
another schema or cannot be read is moved aside (``.corrupt``) and a new one
is made; the caller then catches up from sequence 0.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from natsflow.actors.jetstream.summaries import SummaryChange
from natsflow.events.listing import EXPIRED, Cursor, ExecutionFilter
from natsflow.events.views import ExecutionSummary, unreadable_summary

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
INDEX_FILE = "index.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    updated_at REAL,
    finished_at REAL,
    current TEXT NOT NULL DEFAULT '',
    steps_done INTEGER NOT NULL DEFAULT 0,
    steps_total INTEGER,
    error TEXT,
    failed_step TEXT,
    parent TEXT,
    trigger TEXT,
    idempotency_key TEXT,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS by_start ON executions (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS by_status ON executions (status, started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS by_workflow ON executions (workflow, started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS by_parent ON executions (parent) WHERE parent IS NOT NULL;
-- retention's candidates: finished, not expired yet, oldest first per workflow
CREATE INDEX IF NOT EXISTS by_finished ON executions (workflow, finished_at)
    WHERE finished_at IS NOT NULL AND status != 'expired';
"""

_COLUMNS = (
    "id, workflow, version, status, paused, started_at, updated_at, finished_at, current,"
    " steps_done, steps_total, error, failed_step, parent, trigger, idempotency_key, seq"
)
_UPSERT = f"""
INSERT INTO executions ({_COLUMNS}) VALUES ({", ".join("?" * 17)})
ON CONFLICT (id) DO UPDATE SET
    workflow = excluded.workflow, version = excluded.version, status = excluded.status,
    paused = excluded.paused, started_at = excluded.started_at,
    updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    current = excluded.current, steps_done = excluded.steps_done,
    steps_total = coalesce(excluded.steps_total, executions.steps_total),
    error = excluded.error, failed_step = excluded.failed_step, parent = excluded.parent,
    trigger = excluded.trigger, idempotency_key = excluded.idempotency_key, seq = excluded.seq
WHERE excluded.seq > executions.seq
"""
# A deleted summary (retention) leaves a tombstone: the row, marked expired.
_EXPIRE = "UPDATE executions SET status = ?, paused = 0, current = '', seq = ? WHERE id = ?"

Totals = dict[tuple[str, str], int | None]
"""Steps in a workflow version's definition, by (workflow, version); None: unknown."""


class IndexState:
    """Where an index file stands: ``cursor`` (last sequence applied), ``stream`` (the
    creation time of the stream it follows), ``generation`` (bumped by a rebuild)."""

    def __init__(self, cursor: int, stream: str, generation: int) -> None:
        self.cursor = cursor
        self.stream = stream
        self.generation = generation


class Stale(Exception):
    """The file was reset by a rebuild since this follower read it: follow it anew."""


async def open_index(path: Path) -> tuple[aiosqlite.Connection, str | None]:
    """The index at ``path``, made if missing, made anew if unreadable; and why it was
    made (``missing``, ``corrupt``, ``schema``), None for a good existing file."""
    existed = await anyio.Path(path).exists()
    try:
        db = await _connect(path)
    except sqlite3.DatabaseError as exc:
        log.warning("execution index %s cannot be read (%s): rebuilding it", path, exc)
        set_aside(path)
        return await _connect(path), "corrupt"
    version = await _meta(db, "schema")
    if version != SCHEMA_VERSION and existed and version is not None:
        log.warning(
            "execution index %s has schema %s, not %s: rebuilding", path, version, SCHEMA_VERSION
        )
        await db.close()
        set_aside(path)
        return await _connect(path), "schema"
    return db, None if existed and version is not None else "missing"


async def _connect(path: Path) -> aiosqlite.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None, timeout=10)
    try:
        # WAL: readers never wait for the follower; NORMAL: a commit survives kill -9 (the
        # WAL is written), and a power loss rolls back whole transactions, cursor included.
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.executescript(_SCHEMA)
        await db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('cursor', '0'),"
            " ('stream', ''), ('generation', '0')",
            (SCHEMA_VERSION,),
        )
        await db.execute("SELECT count(*) FROM meta")  # reads the pages: fails on garbage
    except BaseException:
        await db.close()
        raise
    return db


def set_aside(path: Path) -> None:
    """Move a bad index file (and its WAL) out of the way, keeping one copy to look at."""
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if path.exists():
        path.replace(path.with_name(path.name + ".corrupt"))


async def _meta(db: aiosqlite.Connection, key: str) -> str | None:
    async with db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as rows:
        row = await rows.fetchone()
    return None if row is None else str(row[0])


async def read_state(db: aiosqlite.Connection) -> IndexState:
    async with db.execute("SELECT key, value FROM meta") as rows:
        meta = {str(k): str(v) for k, v in await rows.fetchall()}
    return IndexState(int(meta["cursor"]), meta["stream"], int(meta["generation"]))


async def reset(db: aiosqlite.Connection, stream: str, *, bump: bool) -> IndexState:
    """Empty the index to follow ``stream`` from sequence 0 (``bump``: a new generation, so
    a follower elsewhere notices and starts over)."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        state = await read_state(db)
        generation = state.generation + bump
        await db.execute("DELETE FROM executions")
        await db.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            (("0", "cursor"), (stream, "stream"), (str(generation), "generation")),
        )
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
    return IndexState(0, stream, generation)


async def apply(
    db: aiosqlite.Connection, generation: int, changes: Sequence[SummaryChange], totals: Totals
) -> int:
    """Apply the ``changes`` past the stored cursor and store the new cursor, in one
    transaction; the cursor after. ``Stale`` if a rebuild reset the file meanwhile."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        state = await read_state(db)
        if state.generation != generation:
            raise Stale
        fresh = [c for c in changes if c.seq > state.cursor]
        puts = [_row(c, totals) for c in fresh if c.summary is not None or c.problem]
        await db.executemany(_UPSERT, puts)
        gone = [(EXPIRED, c.seq, c.execution) for c in fresh if c.summary is None and not c.problem]
        await db.executemany(_EXPIRE, gone)
        cursor = max([state.cursor, *(c.seq for c in fresh)])
        await db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (str(cursor),))
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
    return cursor


def _row(change: SummaryChange, totals: Totals) -> tuple[Any, ...]:
    s = change.summary or unreadable_summary(change.execution, change.problem or "")
    return (
        change.execution,
        s.workflow,
        s.version,
        s.status,
        int(s.paused),
        s.started_at or 0.0,
        s.updated_at,
        s.finished_at,
        ",".join(s.current),
        s.steps_done,
        totals.get((s.workflow, s.version)),
        s.error,
        s.failed_step,
        s.parent,
        s.trigger,
        s.idempotency_key,
        change.seq,
    )


def _where(query: ExecutionFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("status", query.status),
        ("workflow", query.workflow),
        ("parent", query.parent),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        clauses.append("started_at >= ?")
        args.append(query.since)
    if query.until is not None:
        clauses.append("started_at < ?")
        args.append(query.until)
    if query.error is not None:
        clauses.append("instr(lower(error), lower(?)) > 0")
        args.append(query.error)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def select(
    db: aiosqlite.Connection, query: ExecutionFilter
) -> tuple[list[ExecutionSummary], Cursor | None]:
    """The rows matching ``query``, newest first (ties: by id), after its cursor; and the
    cursor of the next page (None: this is the last)."""
    where, args = _where(query)
    if query.after is not None:
        where += (" AND " if where else " WHERE ") + "(started_at, id) < (?, ?)"
        args += [query.after.started_at, query.after.execution_id]
    sql = f"SELECT {_COLUMNS} FROM executions{where} ORDER BY started_at DESC, id DESC LIMIT ?"
    async with db.execute(sql, [*args, query.limit + 1]) as cursor:
        rows = list(await cursor.fetchall())
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    after = Cursor(float(rows[-1][5]), str(rows[-1][0])) if more else None
    return [_summary(row) for row in rows], after


async def count(db: aiosqlite.Connection, query: ExecutionFilter) -> int:
    where, args = _where(query)
    async with db.execute(f"SELECT count(*) FROM executions{where}", args) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def stats(db: aiosqlite.Connection, query: ExecutionFilter) -> list[tuple[str, str, int]]:
    """(workflow, status, executions) for every pair that has any, by workflow and status."""
    where, args = _where(query)
    sql = (
        f"SELECT workflow, status, count(*) FROM executions{where}"
        " GROUP BY workflow, status ORDER BY workflow, status"
    )
    async with db.execute(sql, args) as cursor:
        return [(str(w), str(s), int(n)) for w, s, n in await cursor.fetchall()]


def _summary(row: Any) -> ExecutionSummary:
    (id_, workflow, version, status, paused, started, updated, finished, current, done,
     total, error, failed_step, parent, trigger, key, _seq) = row  # fmt: skip
    return ExecutionSummary(
        execution_id=id_,
        workflow=workflow,
        version=version,
        status=status,
        started_at=started or None,
        finished_at=finished,
        error=error,
        failed_step=failed_step,
        paused=bool(paused),
        updated_at=updated,
        current=tuple(current.split(",")) if current else (),
        steps_done=done,
        steps_total=total,
        parent=parent,
        trigger=trigger,
        idempotency_key=key,
    )


async def expirable(
    db: aiosqlite.Connection, workflow: str, before: float, limit: int
) -> list[str]:
    """Up to ``limit`` executions of ``workflow`` that finished before ``before`` and are
    not expired yet, oldest first (retention's candidates; the summary is checked again)."""
    sql = (
        "SELECT id FROM executions WHERE workflow = ? AND finished_at IS NOT NULL"
        " AND status != 'expired' AND finished_at < ? ORDER BY finished_at LIMIT ?"
    )
    async with db.execute(sql, (workflow, before, limit)) as cursor:
        return [str(row[0]) for row in await cursor.fetchall()]


async def row(db: aiosqlite.Connection, execution: str) -> ExecutionSummary | None:
    """The index's row of ``execution``, if it has one."""
    async with db.execute(f"SELECT {_COLUMNS} FROM executions WHERE id = ?", (execution,)) as c:
        found = await c.fetchone()
    return None if found is None else _summary(found)
