"""The execution index: ``ls`` pages, filters and counts, ``stats``, and the index file
surviving restarts, deletion, corruption and ``kill -9`` mid-catch-up.

Thousands of executions are written as summaries in bulk through the path the
execution actor uses (``WriteSummary``: a publish to the summaries' KV subject,
group-committed); a few real executions check that ``ls`` agrees with ``show``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from natsflow.actors.index import INDEX_FILE
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import summary_subject
from natsflow.events.errors import InputError
from natsflow.events.messages import json_encoder
from natsflow.events.views import ExecutionSummary
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import Engine, connect, running
from tests.integration.test_crash import serve_process

T0 = 1_700_000_000.0
WORKFLOWS = ("orders", "billing", "mail")
STATUSES = ("running", "completed", "failed", "cancelled")


def synthetic(n: int, *, prefix: str = "x") -> list[ExecutionSummary]:
    """``n`` summaries: three workflows, four statuses, start times with ties (every
    second pair shares one), failures with errors, every tenth a child of ``<prefix>-0``."""
    out = []
    for i in range(n):
        status = STATUSES[i % 4]
        out.append(
            ExecutionSummary(
                execution_id=f"{prefix}-{i}",
                workflow=WORKFLOWS[i % 3],
                version="v1",
                status=status,
                started_at=T0 + i // 2,
                finished_at=None if status == "running" else T0 + i // 2 + 1,
                error=f"boom {i % 7} in step" if status == "failed" else None,
                failed_step="s1" if status == "failed" else None,
                parent=f"{prefix}-0" if i % 10 == 9 else None,
            )
        )
    return out


async def write_summaries(nc: NatsClient, summaries: list[ExecutionSummary]) -> None:
    """Put the summaries as the execution actor does (``WriteSummary``), acks awaited."""
    publisher = Publisher(nc)
    for start in range(0, len(summaries), 2000):
        futures = [
            await publisher.send(summary_subject(s.execution_id), json_encoder.encode(s))
            for s in summaries[start : start + 2000]
        ]
        await publisher.wait(futures)


async def all_pages(engine: Engine, limit: int, **filters: Any) -> list[ExecutionSummary]:
    rows: list[ExecutionSummary] = []
    after = None
    while True:
        page = await engine.client.ls_page(limit=limit, after=after, **filters)
        rows.extend(page.executions)
        if page.next is None:
            return rows
        after = page.next


async def count(engine: Engine, **filters: Any) -> int:
    page = await engine.client.ls_page(count=True, **filters)
    assert page.count is not None
    return page.count


async def test_more_than_1024_executions_are_listed(nats_server: EmbeddedServer) -> None:
    """The regression: 1,100 summaries once listed as [] (a batched direct get's "too
    many subjects" status read as the end); the index lists them all."""
    async with running(nats_server) as engine:
        await write_summaries(engine.nc, synthetic(1100))
        assert await count(engine) == 1100
        assert len(await engine.ls()) == 1000  # the harness asks for the most a page holds
        rows = await all_pages(engine, 1000)
    assert len({r.execution_id for r in rows}) == 1100


async def test_5000_executions_page_without_gap_or_duplicate_and_filters_agree(
    nats_server: EmbeddedServer,
) -> None:
    written = synthetic(5000)
    async with running(nats_server) as engine:
        await write_summaries(engine.nc, written)
        await eventually(lambda: _counted(engine, 5000), within=30)
        rows = await all_pages(engine, 333)
        failed = await all_pages(engine, 1000, status="failed", workflow="billing")
        counts = {
            "failed": await count(engine, status="failed"),
            "billing": await count(engine, workflow="billing"),
            "boom 3": await count(engine, error="BOOM 3"),
            "children": await count(engine, parent="x-0"),
            "window": await count(engine, since=str(T0 + 1000), until=str(T0 + 2000)),
        }
        stats = await engine.client.stats(since=str(T0 + 1000), until=str(T0 + 2000))

    ids = [r.execution_id for r in rows]
    assert len(ids) == 5000
    assert set(ids) == {s.execution_id for s in written}
    keys = [(r.started_at, r.execution_id) for r in rows]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id
    want_failed = [s for s in written if s.status == "failed" and s.workflow == "billing"]
    assert {r.execution_id for r in failed} == {s.execution_id for s in want_failed}
    assert counts == {
        "failed": sum(s.status == "failed" for s in written),
        "billing": sum(s.workflow == "billing" for s in written),
        "boom 3": sum(bool(s.error and "boom 3" in s.error) for s in written),
        "children": sum(s.parent == "x-0" for s in written),
        "window": sum(T0 + 1000 <= (s.started_at or 0) < T0 + 2000 for s in written),
    }
    in_window = Counter(
        (s.workflow, s.status) for s in written if T0 + 1000 <= (s.started_at or 0) < T0 + 2000
    )
    assert {(r.workflow, r.status): r.count for r in stats.rows} == in_window
    assert stats.total == counts["window"]


async def _counted(engine: Engine, n: int) -> None:
    assert await count(engine) == n


FAILING = """
name: failing
steps:
  s1:
    action: shell
    with: {argv: [sh, -c, "echo 'disk full' >&2; exit 3"]}
"""


async def test_ls_of_real_executions_agrees_with_show(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(Path(__file__).parents[2] / "manifests" / "examples" / "hello.yaml")
        await engine.deploy(FAILING)
        ids = [await engine.start("hello", {"name": f"n{i}"}) for i in range(6)]
        ids += [await engine.start("failing") for _ in range(4)]
        shown = {i: await engine.wait_done(i) for i in ids}

        async def agree() -> list[ExecutionSummary]:
            rows = await all_pages(engine, 3)
            assert {r.execution_id: r.status for r in rows} == {
                i: s["status"] for i, s in shown.items()
            }
            return rows

        rows = await eventually(agree, within=10)
        failed = await all_pages(engine, 10, status="failed")
        assert await count(engine, workflow="hello", status="completed") == 6
        by_error = await all_pages(engine, 10, error="exit")
        stats = await engine.client.stats(since="1h")
    assert {r.execution_id for r in failed} == {i for i in ids if shown[i]["status"] == "failed"}
    assert len(failed) == 4
    assert {r.execution_id for r in by_error} <= {r.execution_id for r in failed}
    hello = next(r for r in rows if r.workflow == "hello")
    assert hello.steps_total == len(shown[hello.execution_id]["steps"])
    assert hello.steps_done == shown[hello.execution_id]["steps_done"]
    assert {(r.workflow, r.status): r.count for r in stats.rows} == {
        ("hello", "completed"): 6,
        ("failing", "failed"): 4,
    }


async def test_invalid_filters_are_refused_by_the_client(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        with pytest.raises(InputError, match=r"^since: "):
            await engine.client.ls_page(since="last tuesday")
        with pytest.raises(InputError, match="colour"):
            await engine.client.ls_page(colour="red")


async def test_a_deleted_or_corrupt_index_file_is_rebuilt_at_start(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    index = data / INDEX_FILE
    async with running(nats_server, data_dir=str(data)) as engine:
        await write_summaries(engine.nc, synthetic(300))
        assert await count(engine) == 300
    _replace_file(index, None)
    async with running(nats_server, data_dir=str(data)) as engine:
        await eventually(lambda: _counted(engine, 300), within=20)
    _replace_file(index, b"this is not a database " * 100)
    async with running(nats_server, data_dir=str(data)) as engine:
        await eventually(lambda: _counted(engine, 300), within=20)
        rows = await all_pages(engine, 1000)
    assert len(rows) == 300
    assert (data / f"{INDEX_FILE}.corrupt").read_bytes().startswith(b"this is not")


def _replace_file(index: Path, content: bytes | None) -> None:
    """Delete the index file (and its WAL), or put ``content`` in its place."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if content is not None:
        index.write_bytes(content)


async def test_index_rebuild_refills_the_file_a_service_follows(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    from natsflow.service.indexing import rebuild_index

    data = tmp_path / "data"
    async with running(nats_server, data_dir=str(data)) as engine:
        await write_summaries(engine.nc, synthetic(500))
        assert await count(engine) == 500
        said = await rebuild_index(nats_server.url, str(data))
        assert "500 executions" in said
        assert await count(engine) == 500
    # With no service following it, the rebuild does the catch-up itself.
    said = await rebuild_index(nats_server.url, str(data))
    assert "500 executions" in said


def _file_state(path: Path) -> tuple[int, dict[str, int]]:
    """The cursor and every row's sequence, read from the file directly."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (cursor,) = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        rows = dict(db.execute("SELECT id, seq FROM executions").fetchall())
    db.close()
    return int(cursor), rows


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_mid_catch_up_loses_no_row_and_applies_none_twice(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    n = 60_000
    index = tmp_path / "data" / INDEX_FILE
    port = free_port()
    # This checkout's natsflow, whatever checkout the console script was installed from.
    env = {"NATSFLOW_HTTP_PORT": str(port), "PYTHONPATH": str(Path(__file__).parents[2])}
    async with connect(nats_server.url) as engine:
        async with serve_process(nats_server, tmp_path, env):
            await engine.wait_ready()
        seqs = await _write_counting_seqs(engine.nc, synthetic(n))
        async with serve_process(nats_server, tmp_path, env) as second:

            async def catching_up() -> None:
                assert index.exists()
                cursor, _ = _file_state(index)
                assert cursor > 0

            await eventually(catching_up, within=60, interval=0.005)
            os.kill(second.pid, signal.SIGKILL)
            await second.wait()
        cursor, rows = _file_state(index)
        assert 0 < len(rows) < n, "the kill did not land mid-catch-up"
        # Rows and cursor agree: exactly the changes up to the cursor, each as written.
        assert rows == {e: s for e, s in seqs.items() if s <= cursor}
        async with serve_process(nats_server, tmp_path, env):
            await engine.wait_ready()
            await eventually(lambda: _counted(engine, n), within=120, interval=0.2)
            metrics = await _metrics(port)
    _, final = _file_state(index)
    assert final == seqs
    applied = _sample(metrics, "natsflow_index_applied_total")
    assert applied == n - len(rows), "a change was applied twice (or skipped)"


async def _write_counting_seqs(nc: NatsClient, summaries: list[ExecutionSummary]) -> dict[str, int]:
    publisher = Publisher(nc)
    seqs: dict[str, int] = {}
    for start in range(0, len(summaries), 2000):
        chunk = summaries[start : start + 2000]
        futures = [
            await publisher.send(summary_subject(s.execution_id), json_encoder.encode(s))
            for s in chunk
        ]
        for s, seq in zip(chunk, await publisher.wait(futures), strict=True):
            seqs[s.execution_id] = seq
    return seqs


async def _metrics(port: int) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


__all__ = ["synthetic", "write_summaries"]
