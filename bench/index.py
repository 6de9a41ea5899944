"""Execution index benchmark: ``ls`` over a million executions (issue 12).

1. A nats-server (its default, lazy sync) and natsflow's topology.
2. ``--executions`` finished executions written in bulk by this benchmark, the way
   the service writes a summary: the KV put of an ``ExecutionSummary`` on
   ``$KV.natsflow_executions.<id>`` through natsflow's ``Publisher`` (plain
   publishes, ``--window`` acks outstanding). 10 workflows, 5% failed, started
   over the last 30 days (so ``--since 1h`` matches a few dozen per workflow).
3. ``natsflow serve`` (actors, admin API, HTTP for ``/metrics``; no workers) with
   an empty data directory: the index catches up from sequence 0. Timed until
   ``natsflow_index_applied_total`` reaches the summaries written: rows/s.
4. ``--sleepers`` real executions of a workflow with one ``sleep: 1h`` step,
   started through the admin API; once they are all sleeping and passivated
   (``natsflow_active_actors`` back to 0), the serving process's RSS
   (``/proc/<pid>/status``), next to its RSS before them.
5. ``ls --status failed --limit 50`` and ``ls --workflow W --since 1h`` over the
   admin API (what ``natsflow ls`` sends), ``--queries`` times each: p50/p99
   round trips, and the SQLite file's size (with its WAL).

    .venv/bin/python bench/index.py                          # 1,000,000 + 10,000 sleeping
    .venv/bin/python bench/index.py --executions 100000 --sleepers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec
import nats

from bench.common import Child, bench_server, kill_leftovers, natsflow_argv, run_main
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import provision, summary_subject
from natsflow.events.views import ExecutionSummary
from natsflow.service.client import Client
from natsflow.service.embedded import free_port

WORKFLOWS = [f"bench-{i}" for i in range(10)]
SLEEPER = """
name: sleeper
steps:
  nap:
    action: sleep
    with: {duration: 1h}
"""


def summary(i: int, now: float, rng: random.Random) -> ExecutionSummary:
    started = now - rng.uniform(0, 30 * 86400)
    failed = rng.random() < 0.05
    workflow = WORKFLOWS[i % len(WORKFLOWS)]
    return ExecutionSummary(
        execution_id=f"{workflow}-{i:08d}",
        workflow=workflow,
        version="v1",
        status="failed" if failed else "completed",
        started_at=started,
        finished_at=started + 1.5,
        updated_at=started + 1.5,
        error="step fetch: HTTP 503 from upstream" if failed else None,
        failed_step="fetch" if failed else None,
        steps_done=2 if failed else 3,
    )


async def write_summaries(url: str, n: int, window: int) -> float:
    """Write ``n`` summaries; the puts per second."""
    nc = await nats.connect(url, max_reconnect_attempts=0)
    publisher = Publisher(nc, group_commit=False)
    encoder = msgspec.json.Encoder()
    rng = random.Random(12)
    now = time.time()
    pending: list[asyncio.Future[int]] = []
    started = time.perf_counter()
    for i in range(n):
        s = summary(i, now, rng)
        pending.append(await publisher.send(summary_subject(s.execution_id), encoder.encode(s)))
        if len(pending) >= window:
            await publisher.wait(pending)
            pending = []
        if i and i % 100_000 == 0:
            print(f"  {i:,} summaries written", file=sys.stderr)
    await publisher.wait(pending)
    took = time.perf_counter() - started
    await nc.close()
    return n / took


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("natsflow_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
    return out


def metric(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.split("{")[0] == prefix)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_metric(child: Child, port: int, name: str, target: float, within: float) -> float:
    deadline = time.monotonic() + within
    while True:
        child.check_alive()
        try:
            value = metric(metrics(port), name)
        except OSError:
            value = -1
        if value >= target:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} at {value}, not {target}, after {within}s")
        await asyncio.sleep(0.2)


async def start_sleepers(client: Client, n: int, concurrency: int = 64) -> float:
    queue = iter(range(n))

    async def one() -> None:
        for _ in queue:
            await client.start("sleeper", {})

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def timed(queries: int, ask: object) -> list[float]:
    times = []
    for _ in range(queries):
        t = time.perf_counter()
        await ask()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return times


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix="natsflow-bench-index-", dir="/tmp"))
    server = bench_server(directory, fsync=False)
    await server.start()
    result: dict[str, object] = {"executions": args.executions, "sleepers": args.sleepers}
    serve: Child | None = None
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=0)
        await provision(nc.jetstream(timeout=30), ack_wait=30)
        await nc.close()
        print(f"writing {args.executions:,} summaries", file=sys.stderr)
        result["bulk_puts_per_s"] = round(
            await write_summaries(server.url, args.executions, args.window)
        )
        print(f"  {result['bulk_puts_per_s']:,} puts/s", file=sys.stderr)
        http = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NATSFLOW_")}
        env.update(
            NATS_URL=server.url,
            NATSFLOW_WORKERS="0",
            NATSFLOW_HTTP_PORT=str(http),
            NATSFLOW_DATA_DIR=str(directory / "data"),
            NATSFLOW_DURABILITY="relaxed",
            NATSFLOW_ACTOR_IDLE_TIMEOUT=str(args.idle),
            NATSFLOW_MAX_ACTIVE_ACTORS=str(max(20_000, args.sleepers * 2)),
            PYTHONUNBUFFERED="1",
        )
        began = time.monotonic()
        serve = Child("natsflow serve", natsflow_argv("serve", uvloop=False), env, directory / "s")
        done = await wait_metric(
            serve, http, "natsflow_index_applied_total", args.executions, within=3600
        )
        took = done - began
        result["catch_up_s"] = round(took, 1)
        result["catch_up_rows_per_s"] = round(args.executions / took)
        result["rss_mb_after_catch_up"] = round(rss_mb(serve.pid), 1)
        print(f"  catch-up: {result['catch_up_rows_per_s']:,} rows/s", file=sys.stderr)
        client = await Client.connect(server.url, request_timeout=30)
        try:
            await client.deploy(SLEEPER, format="yaml")
            if args.sleepers:
                result["sleepers_started_per_s"] = round(
                    await start_sleepers(client, args.sleepers)
                )
                # every sleeper indexed as running, then every actor passivated
                deadline = time.monotonic() + 600
                while True:
                    serve.check_alive()
                    running = await client.ls_page(status="running", workflow="sleeper", count=True)
                    active = metric(metrics(http), "natsflow_active_actors")
                    if running.count == args.sleepers and active == 0:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{running.count} sleeping, {active} active")
                    await asyncio.sleep(0.5)
                result["sleeping"] = running.count
            result["rss_mb_with_sleepers"] = round(rss_mb(serve.pid), 1)
            failed = await timed(args.queries, lambda: client.ls(status="failed", limit=50))
            recent = await timed(
                args.queries, lambda: client.ls(workflow=WORKFLOWS[3], since="1h", limit=50)
            )
            result["ls_failed_50_ms"] = {"p50": pct(failed, 0.5), "p99": pct(failed, 0.99)}
            result["ls_workflow_since_1h_ms"] = {"p50": pct(recent, 0.5), "p99": pct(recent, 0.99)}
            result["ls_workflow_since_1h_rows"] = len(
                await client.ls(workflow=WORKFLOWS[3], since="1h", limit=1000)
            )
            total = await client.ls_page(count=True)
            result["index_rows"] = total.count
        finally:
            await client.close()
        db = directory / "data" / "index.sqlite3"
        size = sum(p.stat().st_size for p in db.parent.glob("index.sqlite3*") if p.is_file())
        result["sqlite_mb"] = round(db.stat().st_size / 2**20, 1)
        result["sqlite_with_wal_mb"] = round(size / 2**20, 1)
    finally:
        if serve is not None:
            await serve.stop()
        await server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--sleepers", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--window", type=int, default=2000, help="acks outstanding")
    parser.add_argument("--idle", type=float, default=5.0, help="actor idle timeout (s)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    try:
        result = run_main(lambda: main_async(args), uvloop=False)
    finally:
        kill_leftovers()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
